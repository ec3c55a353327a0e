"""User-facing error types.

Every error a user can cause (bad input, a wrong bundle, too little memory) is a ``MedTransError``:
front ends show its message as one line; anything else is a bug and keeps its traceback.
"""


class MedTransError(Exception):
    """Base class of errors whose message is meant for the user."""


class InputError(MedTransError, ValueError):
    """An input image, path or option that cannot be used (message says why and what to do)."""


class OutputError(InputError):
    """An output that cannot be written (a bad path, no permission, a full disk); nothing of the run is left behind."""


class BundleError(MedTransError):
    """A model bundle that is missing, malformed, or fails its integrity check."""


class MemoryGuardError(MedTransError):
    """The estimated memory of a run exceeds the configured limit (message names the limit)."""


class CancelledError(MedTransError):
    """The run was cancelled by the caller."""
