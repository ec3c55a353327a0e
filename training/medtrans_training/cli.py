"""``medtrans-train``: train a stage, export a run to a bundle, evaluate a bundle against the baselines.

    medtrans-train train CONFIG [--run-dir DIR] [--set train.steps=100 ...] [--device auto|cpu|cuda]
    medtrans-train train --resume RUN_DIR [--set train.steps=2000]
    torchrun --nproc_per_node 4 -m medtrans_training train CONFIG --run-dir DIR      # DDP, one GPU per process
    medtrans-train export RUN_DIR --out BUNDLE_DIR [--name NAME] [--keep-all-pairs] [--max-cases N]
    medtrans-train select BUNDLE_DIR --validation SPEC --test SPEC [--validation-cases A,B] [--test-cases C,D]
    medtrans-train evaluate BUNDLE --data SPEC --out table.md [--max-cases N] [--figure F.png [--figure-cases N]]
    medtrans-train crossval CONFIG --out DIR [--bundle BUNDLE_DIR] [--folds A,B] [--table T.md] [--figure F.png]
        [--readme README.md]

Errors a user can fix print one line ``error: ...`` on stderr and exit with status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from MedTransCore.errors import InputError, MedTransError

from .config import load_config


def _command(argv: list[str]) -> str:
    return shlex.join(["medtrans-train", *argv])


def _train(args: argparse.Namespace, argv: list[str]) -> None:
    from .trainer import CONFIG_NAME, Trainer

    if args.resume:
        run_dir = Path(args.resume)
        config = load_config(args.config or run_dir / CONFIG_NAME, args.set)
    elif args.config:
        config = load_config(args.config, args.set)
        run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
    else:
        raise MedTransError("give a CONFIG file, or --resume RUN_DIR")
    logs = Trainer(config, run_dir, resume=bool(args.resume), device=args.device, command=_command(argv)).fit()
    if logs and os.environ.get("RANK", "0") == "0":
        print(json.dumps({"run_dir": str(run_dir), **logs}))


def _export(args: argparse.Namespace, argv: list[str]) -> None:
    from .export import export_run

    bundle = export_run(
        args.run_dir,
        args.out,
        name=args.name,
        keep_all_pairs=args.keep_all_pairs,
        max_cases=args.max_cases,
        device=args.device,
        command=_command(argv),
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(json.dumps({"bundle": str(bundle.path), "name": bundle.name, "pairs": bundle.metadata["pairs"]}))


def _comma_list(text: str | None) -> list[str] | None:
    return [case.strip() for case in text.split(",") if case.strip()] if text else None


def _select(args: argparse.Namespace, argv: list[str]) -> None:
    from MedTransCore.bundles import load_bundle

    from .data import cases_from_spec
    from .selection import reselect_bundle

    meta = load_bundle(args.bundle_dir).metadata
    modalities, spacing = meta["modalities"], meta.get("spacing")
    validation = cases_from_spec(
        args.validation, modalities, spacing, split="val", cases=_comma_list(args.validation_cases)
    )
    test = cases_from_spec(args.test, modalities, spacing, split="test", cases=_comma_list(args.test_cases))
    bundle = reselect_bundle(
        args.bundle_dir,
        validation,
        test,
        validation_data=args.validation,
        test_data=args.test,
        command=_command(argv),
        allow_empty=args.allow_empty,
        device=args.device,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    dropped = bundle.metadata["metrics"]["dropped_pairs"]
    print(json.dumps({"bundle": str(bundle.path), "pairs": bundle.metadata["pairs"], "dropped": dropped}, indent=2))


def _evaluate(args: argparse.Namespace, argv: list[str]) -> None:
    from MedTransCore.bundles import find_bundle

    from .data import cases_from_spec
    from .evaluate import BASELINES, SUMMARY_METRICS, evaluate_cases, write_report

    metrics = tuple(_comma_list(args.metrics) or ())
    if not metrics or (unknown := [m for m in metrics if m not in SUMMARY_METRICS]):
        raise SystemExit(f"--metrics: unknown {', '.join(unknown)}; choose from {', '.join(SUMMARY_METRICS)}")
    bundle = find_bundle(args.bundle)
    cases = cases_from_spec(args.data, bundle.metadata["modalities"], bundle.metadata.get("spacing"), split=args.split)
    if args.figure_cases < 1:
        raise SystemExit(f"--figure-cases must be at least 1, got {args.figure_cases}")
    keep = {} if args.figure else None
    rows = evaluate_cases(
        bundle,
        cases[: args.max_cases],
        baselines=(*BASELINES, *args.compare),
        device=args.device,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
        keep=keep,
    )
    title = f"{bundle.name} on {args.data}"
    write_report(rows, args.out, title=title, metrics=metrics)
    if keep:
        from .evaluate_figure import evaluation_figure

        drawn = evaluation_figure(rows, keep, args.figure, max_cases=args.figure_cases, title=title)
        print(f"figure: {drawn['path']}", file=sys.stderr, flush=True)
    print(Path(args.out).read_text(encoding="utf-8"), end="")


def _crossval(args: argparse.Namespace, argv: list[str]) -> None:
    from .crossval import crossval
    from .crossval_report import crossval_figure, crossval_table, replace_block
    from .recipe import load_recipe

    recipe = load_recipe(args.config, args.set)
    config = recipe.final
    out = Path(args.out)
    summary = crossval(
        recipe,
        out,
        bundle=Path(args.bundle) if args.bundle else None,
        folds=_comma_list(args.folds),
        device=args.device,
        command=_command(argv),
        log=lambda line: print(line, file=sys.stderr, flush=True),
        partial=args.partial,
    )
    if summary is None:
        return
    table = crossval_table(summary)
    name = config.get("export", {}).get("name") or Path(args.config).stem
    written = []
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(table, encoding="utf-8")
        written.append(args.table)
    if args.figure:
        written.append(str(crossval_figure(summary, out, Path(args.figure))))
    if args.readme:
        readme = Path(args.readme)
        try:
            readme.write_text(replace_block(readme.read_text(encoding="utf-8"), name, table), encoding="utf-8")
        except ValueError as exc:
            raise InputError(f"{readme}: {exc}") from None
        written.append(args.readme)
    print(table, end="")
    if written:
        print(f"wrote {', '.join(written)}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medtrans-train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    device = {"choices": ["auto", "cpu", "cuda"], "default": "auto"}

    train = sub.add_parser("train", help="train one stage from a YAML/JSON config")
    train.add_argument("config", nargs="?", help="config file (default with --resume: the run's config.json)")
    train.add_argument("--run-dir", help="run folder (default runs/<config name>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its checkpoint")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. train.steps=50")
    train.add_argument("--device", **device)
    train.set_defaults(func=_train)

    export = sub.add_parser(
        "export", help="turn a run into a model bundle (pairs chosen on its validation cases, scored on its test cases)"
    )
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, help="bundle folder to create")
    export.add_argument("--name", help="bundle name (default: export.name of the config)")
    export.add_argument(
        "--keep-all-pairs", action="store_true", help="list pairs that did not beat the baselines on validation too"
    )
    export.add_argument("--max-cases", type=int, help="use at most N validation and N test cases")
    export.add_argument("--device", **device)
    export.set_defaults(func=_export)

    select = sub.add_parser(
        "select",
        help="re-choose an existing bundle's pairs on validation cases and score them on test cases (rewrites "
        "its metadata.json; weights untouched)",
    )
    select.add_argument("bundle_dir", help="bundle folder (its metadata lists every trained pair)")
    spec = "run config, data folder, manifest, or phantom:ANATOMY:START-STOP"
    select.add_argument("--validation", required=True, metavar="SPEC", help=f"validation cases: {spec}")
    select.add_argument("--test", required=True, metavar="SPEC", help=f"test cases: {spec}")
    select.add_argument("--validation-cases", metavar="A,B", help="only these cases of --validation")
    select.add_argument("--test-cases", metavar="C,D", help="only these cases of --test")
    select.add_argument(
        "--allow-empty", action="store_true", help="rewrite the metadata even if no pair qualifies (it then lists none)"
    )
    select.add_argument("--device", **device)
    select.set_defaults(func=_select)

    evaluate = sub.add_parser("evaluate", help="score a bundle and the baselines on held-out cases")
    evaluate.add_argument("bundle", help="bundle folder or installed name")
    evaluate.add_argument(
        "--data", required=True, help="run config, data folder, manifest, or phantom:ANATOMY:START-STOP"
    )
    evaluate.add_argument("--out", required=True, help="markdown table to write (JSON next to it)")
    evaluate.add_argument("--max-cases", type=int, help="evaluate at most N cases")
    evaluate.add_argument(
        "--split",
        choices=("val", "test"),
        default="val",
        help="which split of a run config or manifest --data names (default val)",
    )
    evaluate.add_argument(
        "--compare", nargs="+", default=[], metavar="BUNDLE", help="other bundles scored on the same cases"
    )
    evaluate.add_argument(
        "--metrics",
        default="MAE,PSNR,SSIM,MS_SSIM,NCC",
        help="table columns, comma-separated, of MAE, ME, PSNR, SSIM, MS_SSIM, NCC, SLICE_DIFF",
    )
    evaluate.add_argument(
        "--figure", metavar="PNG", help="also draw source | each method | truth (axial and coronal) of a few cases"
    )
    evaluate.add_argument(
        "--figure-cases", type=int, default=4, metavar="N", help="cases in the --figure (default 4, the first ones)"
    )
    evaluate.add_argument("--device", **device)
    evaluate.set_defaults(func=_evaluate)

    cv = sub.add_parser(
        "crossval",
        help="leave-one-subject-out cross-validation on real subjects; exports the all-subject model listing what "
        "beat identity and histogram matching on every held-out subject",
    )
    cv.add_argument(
        "config",
        help="run config whose data are the subjects (splits are ignored), or a pipeline file of several stages "
        "(medtrans_training.recipe: every fold trains every stage)",
    )
    cv.add_argument("--out", required=True, help="folder of the fold runs and scores (resumable)")
    cv.add_argument("--bundle", help="bundle folder to create from the model trained on every subject")
    cv.add_argument("--folds", metavar="A,B", help="run only these held-out subjects now (e.g. two processes)")
    cv.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    cv.add_argument(
        "--partial",
        action="store_true",
        help="summarise (and export) from the folds scored so far; the others are recorded as not held out",
    )
    cv.add_argument("--table", help="markdown table to write")
    cv.add_argument("--figure", help="PNG figure to write (source | synthetic | truth | |difference|)")
    cv.add_argument("--readme", help="README whose <!-- crossval:NAME:begin/end --> block gets the table")
    cv.add_argument("--device", **device)
    cv.set_defaults(func=_crossval)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        args.func(args, argv)
    except MedTransError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
