"""Small sub-commands: ``models`` (what is installed), ``benchmark`` (speed/memory table), ``web`` (browser app)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..bundles import SHIPPED_DIR, installed_bundles, user_model_dirs


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list installed model bundles (shipped + user folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run_models)

    p = sub.add_parser("benchmark", help="time each model family (seconds per volume, peak memory) and print a table")
    p.add_argument("--json", type=Path, help="also write the rows as a JSON list")
    p.add_argument("--quick", action="store_true", help="tiny grids and few steps (a smoke run)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--model", action="append", metavar="NAME_OR_FOLDER", help="benchmark this bundle (repeatable; default: all)"
    )
    p.add_argument("--family", action="append", help="only bundles of this family (repeatable)")
    p.set_defaults(run=run_benchmark)

    p = sub.add_parser("web", help="start the browser front end (trame-slicer) on 127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.set_defaults(run=run_web)


def run_models(args: argparse.Namespace) -> int:
    bundles = installed_bundles()
    if args.json:
        rows = [
            {"name": b.name, "path": str(b.path), **{k: b.metadata[k] for k in ("family", "version", "pairs")}}
            for b in bundles
        ]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"shipped: {SHIPPED_DIR}\nuser:    {', '.join(map(str, user_model_dirs()))}\n")
    for b in bundles:
        pairs = b.pairs
        shown = ", ".join(f"{s}->{t}" for s, t in pairs[:6]) + (f", ... ({len(pairs)} pairs)" if len(pairs) > 6 else "")
        print(f"{b.name:<24} {b.family:<20} {b.metadata['version']:<8} {shown}")
    if not bundles:
        print("no models installed")
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from ..benchmark import run_benchmark as benchmark
    from ..benchmark_table import format_table
    from .progress import ProgressPrinter

    progress = ProgressPrinter("bar", "benchmark")
    rows = benchmark(quick=args.quick, device=args.device, models=args.model, families=args.family, progress=progress)
    progress.close()
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


def run_web(args: argparse.Namespace) -> int:
    try:
        from MedTransWeb.app import main as web_main  # optional front end; MedTransCore never needs it
    except ImportError as exc:
        print(f"error: the browser front end is not installed ({exc}); run `make web`", file=sys.stderr)
        return 1
    return web_main(["--port", str(args.port), "--host", args.host]) or 0
