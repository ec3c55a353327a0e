"""``medtrans`` command line: one sub-command per module, one-line errors, exit codes 0 / 1 (error) / 2 (usage)."""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..errors import MedTransError
from . import batch, demo, evaluate, info, phantom, translate

COMMANDS = (translate, evaluate, demo, batch, phantom, info)


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
        code = args.run(args)
    except MedTransError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
