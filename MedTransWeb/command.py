"""``medtrans web``: the sub-command this package adds to the core's CLI (entry point group ``medtrans.commands``).

The core discovers it through the package metadata and never imports the front end itself. Only ``argparse`` work
happens here: trame and VTK load when the command runs.
"""

from __future__ import annotations

import argparse

from .app import DESCRIPTION, EPILOG, add_arguments, serve


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``web`` to the ``medtrans`` sub-commands.

    Args:
        sub: the sub-parsers of the ``medtrans`` parser.
    """
    p = sub.add_parser(
        "web",
        help="start the browser front end (trame-slicer) on 127.0.0.1",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    serve(args)  # returns only by raising (a missing extra); the server exits the process itself
    return 0
