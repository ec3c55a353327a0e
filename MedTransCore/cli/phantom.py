"""``medtrans phantom``: write a paired multi-modal phantom case."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..phantoms import ANATOMIES, generate_phantom


def add_parser(sub) -> None:
    p = sub.add_parser("phantom", help="write a co-registered multi-modal phantom (CT, CBCT, MR ..., labels, mask)")
    p.add_argument("--anatomy", choices=ANATOMIES, default="head")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, nargs="+", default=[96], metavar="N", help="voxels: N or X Y Z (default 96)")
    p.add_argument("--spacing", type=float, nargs="+", default=[2.0], metavar="MM", help="mm: S or X Y Z (default 2)")
    p.set_defaults(run=run)


def _triple(values: list, name: str) -> tuple:
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) == 3:
        return tuple(values)
    raise SystemExit(f"error: --{name} takes one or three values")


def run(args: argparse.Namespace) -> int:
    case = generate_phantom(
        anatomy=args.anatomy, seed=args.seed, shape=_triple(args.size, "size"), spacing=_triple(args.spacing, "spacing")
    )
    written = case.save(args.out)
    print(
        f"wrote {args.anatomy} phantom (seed {args.seed}): {', '.join(Path(p).name for p in written.values())} to {args.out}/"
    )
    return 0
