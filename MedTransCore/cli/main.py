"""``medtrans`` command line: one sub-command per module, one-line errors, exit codes 0 / 1 (error) / 2 (usage)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .. import __version__
from ..errors import MedTransError
from . import batch, demo, dose, evaluate, extensions, info, phantom, translate

# extensions last: front ends (e.g. `medtrans web`) registered as entry points, never imported by name.
COMMANDS = (translate, evaluate, demo, batch, phantom, dose, info, extensions)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtrans",
        description="3D medical image-to-image translation. Every output is SYNTHETIC and labelled as such.",
    )
    parser.add_argument("--version", action="version", version=f"medtrans {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        with interrupted_once():
            code = args.run(args)
    except MedTransError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:  # a write or read the commands did not foresee: still one line, no traceback
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def os_error_line(exc: OSError) -> str:
    """``<file>: <reason>`` for an ``OSError`` (just the reason when it names no file)."""
    names = " -> ".join(str(n) for n in (exc.filename, exc.filename2) if n is not None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{names}: {reason}" if names else reason


@contextmanager
def interrupted_once() -> Iterator[None]:
    """The first Ctrl+C interrupts the command; later ones are ignored until the process exits.

    Outputs are staged and removed on ``KeyboardInterrupt`` (:class:`MedTransCore.io.staging.StagedOutputs`); a
    second SIGINT during that clean-up, or while the error is printed, would otherwise kill the process half way.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield  # no signals here, or started with SIGINT ignored (e.g. in the background): leave it so
        return
    interrupted = []

    def interrupt(signum, frame) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        interrupted.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
    finally:
        if not interrupted:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
