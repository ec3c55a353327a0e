"""Small sub-commands: ``models`` (what is installed) and ``benchmark`` (speed/memory table)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bundles import SHIPPED_DIR, installed_bundles, user_model_dirs
from ..domain import bundle_domain_words


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
    instead = p.add_mutually_exclusive_group()
    instead.add_argument(
        "--dose",
        action="store_true",
        help="instead: the dose check on held-out head phantoms (CBCT, histogram matching, the model; minutes)",
    )
    instead.add_argument(
        "--cbct-simulation",
        action="store_true",
        help="instead: the RTK cone-beam simulation's speed, water/air HU, cupping, noise and streaks (minutes; "
        "with --quick: tiny grids)",
    )
    p.set_defaults(run=run_benchmark)


def run_models(args: argparse.Namespace) -> int:
    from ..bundles import broken_bundles

    bundles, broken = installed_bundles(), broken_bundles()  # broken: folders that do not load, with the reason
    if args.json:
        rows = [
            {
                "name": b.name,
                "path": str(b.path),
                **{k: b.metadata[k] for k in ("family", "version", "pairs")},
                "domain": b.domain,  # declared, or implied by older metadata; null: not declared
                "source_sets": b.metadata.get("source_sets", []),
            }
            for b in bundles
        ]
        rows += [{"name": b.name, "path": str(b.path), "broken": b.reason} for b in broken]
        print(json.dumps(rows, indent=2))
        return 0
    print(f"shipped: {SHIPPED_DIR}\nuser:    {', '.join(map(str, user_model_dirs()))}\n")
    for b in bundles:
        pairs = b.pairs
        shown = ", ".join(f"{s}->{t}" for s, t in pairs[:6]) + (f", ... ({len(pairs)} pairs)" if len(pairs) > 6 else "")
        print(f"{b.name:<24} {b.family:<20} {b.metadata['version']:<8} {shown}")
        print(f"{'':<24} domain: {bundle_domain_words(b.domain)}")
        for entry in b.metadata.get("source_sets", []):  # several sequences in, one out
            print(f"{'':<24} sources: {' + '.join(entry['sources'])} -> {entry['target']}")
    for b in broken:
        print(f"{b.name:<24} BROKEN: {b.reason}")
    if not bundles:
        print("no models installed")
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from ..benchmark import run_benchmark as benchmark
    from ..benchmark_table import format_table
    from .progress import ProgressPrinter

    progress = ProgressPrinter("bar", "benchmark")
    if args.dose:
        from ..benchmark_dose import dose_benchmark, format_dose_table

        rows = dose_benchmark(progress=progress)
        progress.close()
        print(format_dose_table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    if args.cbct_simulation:
        from ..benchmark_cone_beam import cone_beam_benchmark, format_cone_beam_table

        rows = cone_beam_benchmark(quick=args.quick, progress=progress)
        progress.close()
        print(format_cone_beam_table(rows))
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    rows = benchmark(quick=args.quick, device=args.device, models=args.model, families=args.family, progress=progress)
    progress.close()
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0
