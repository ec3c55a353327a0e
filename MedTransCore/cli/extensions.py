"""Sub-commands that installed front ends add to ``medtrans`` through entry points (group ``medtrans.commands``).

The core imports no front end (no trame, VTK or Slicer): a package that wants a ``medtrans`` sub-command declares

.. code-block:: toml

    [project.entry-points."medtrans.commands"]
    web = "MedTransWeb.command:add_parser"

and ``add_parser(sub)`` adds its sub-parser with a ``run(args) -> int`` default, like the core's own commands.
"""

from __future__ import annotations

import argparse
from importlib.metadata import EntryPoint, distributions

from ..errors import MedTransError

GROUP = "medtrans.commands"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add every registered front-end command that the core does not define itself.

    A command whose module cannot be imported still appears, and running it reports why in one line, so a broken
    front end never breaks the core's own commands.

    Args:
        sub: the sub-parsers of the ``medtrans`` parser.
    """
    failures: dict[str, tuple[EntryPoint, ImportError]] = {}
    for entry in registered_commands():
        if entry.name in sub.choices:  # a core command, or a copy found later on sys.path of one already added
            continue
        try:
            add = entry.load()
        except ImportError as exc:
            failures.setdefault(entry.name, (entry, exc))  # a later copy of the metadata may still load
            continue
        add(sub)
    for name, (entry, exc) in failures.items():
        if name not in sub.choices:
            _add_unloadable(sub, entry, exc)


def registered_commands() -> list[EntryPoint]:
    """The ``medtrans.commands`` entry points of every distribution on ``sys.path``, by name, in path order.

    Every copy of a distribution's metadata is read, not only the first (as ``entry_points()`` does): a stale copy
    earlier on the path, such as an in-tree ``medtrans.egg-info`` left by a build, must not hide the installed one.
    """
    found = [entry for dist in distributions() for entry in dist.entry_points if entry.group == GROUP]
    return sorted(found, key=lambda entry: entry.name)  # stable: for one name, the first on sys.path comes first


def _add_unloadable(sub: argparse._SubParsersAction, entry: EntryPoint, exc: ImportError) -> None:
    # No option prefix: every argument (the real command's options, --help) is taken as is, so that the
    # one-line error below is what the user sees, not an argparse complaint about an unknown option.
    p = sub.add_parser(
        entry.name, help=f"(unavailable: cannot import {entry.value})", prefix_chars="\0", add_help=False
    )
    p.add_argument("ignored", nargs="*", help=argparse.SUPPRESS)

    def run(_: argparse.Namespace) -> int:
        raise MedTransError(f"the {entry.name!r} command is installed but {entry.value} cannot be imported: {exc}")

    p.set_defaults(run=run)
