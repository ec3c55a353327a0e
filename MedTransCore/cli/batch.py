"""``medtrans batch``: translate a cohort from a CSV manifest, resumably, past bad cases.

A case may have several sources (e.g. three MR sequences in, the missing one out): its further sources are columns
named after their modality (``MR_T1C``, ``MR_FLAIR`` ...), see :mod:`.manifest`; ``input`` stays the first source
and the reference grid. Everything is checked before the first case runs: the manifest (:mod:`.manifest`),
``status.json`` left by an earlier run in ``--out``, and every output (no input replaced, nothing existing replaced
without ``--overwrite``; ``status.json`` and ``summary.csv`` of the batch being resumed are its own and are kept up
to date).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..domain import domain_hints
from ..errors import InputError, MedTransError
from ..io import read_image, read_mask
from ..io.writing import write_text
from ..metrics import evaluate_images
from ..translate import translate_image
from .manifest import REQUIRED_COLUMNS, extra_sources, read_manifest, row_paths
from .options import add_model_options, add_overwrite_option
from .outputs import file_output, image_output, plan_outputs, write_synthetic
from .progress import track

STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.csv"


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="translate every case of a CSV manifest (resumable)")
    p.add_argument(
        "manifest",
        type=Path,
        help=f"CSV (UTF-8) with columns {', '.join(REQUIRED_COLUMNS)} [, reference, mask, case] and, for several "
        "sources, one column per further source named after its modality (e.g. MR_T1C, MR_FLAIR) holding its path "
        "(input is the first source and the reference grid; leave a cell empty when a case lacks that sequence)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder: one sub-folder per case + summary.csv")
    add_model_options(p)
    add_overwrite_option(p)
    p.set_defaults(run=run)


def case_output(out: Path, row: dict[str, str]) -> Path:
    return out / row["case"] / f"synthetic_{row['target_modality']}.nii.gz"


def read_status(path: Path) -> dict[str, dict]:
    """The ``status.json`` an earlier run left (``{}`` when there is none).

    Raises:
        InputError: it cannot be read or is not a batch status (e.g. cut short); the message says to delete it.
    """
    if not (path.exists() or path.is_symlink()):
        return {}
    advice = "delete it to run every case again"
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(
            f"{path} from an earlier batch is not valid JSON ({err.msg}, line {err.lineno}); {advice}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path} from an earlier batch cannot be read ({err}); {advice}") from None
    if not isinstance(status, dict) or not all(isinstance(s, dict) and "status" in s for s in status.values()):
        raise InputError(f"{path} is not the status file of a batch; {advice}")
    return status


def _done(status: dict[str, dict], row: dict[str, str]) -> bool:
    earlier = status.get(row["case"], {})
    return earlier.get("status") == "done" and Path(str(earlier.get("output", ""))).is_file()


def run_case(row: dict[str, str], output: Path, args: argparse.Namespace) -> dict:
    """Translate (and score) one case, then write its output; returns its summary row."""
    image, info = read_image(Path(row["input"]))
    extras, tags = {}, {}
    for modality, path in extra_sources(row):
        extras[modality], extra_info = read_image(Path(path))
        tags[modality] = extra_info.dicom_modality
    more = {"extra_sources": extras, "extra_dicom_modalities": tags} if extras else {}
    result = translate_image(
        image,
        row["source_modality"],
        row["target_modality"],
        **more,
        model=args.model,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        device=args.device,
        strict=args.strict,
        dicom_modality=info.dicom_modality,
        hints=domain_hints(info.metadata),
    )
    summary = {"model": result.bundle.name, "warnings": " | ".join(result.warnings)}
    if row.get("reference"):  # scored first: a case that fails leaves no output behind
        reference, _ = read_image(Path(row["reference"]))
        mask = read_mask(Path(row["mask"]), like=reference) if row.get("mask") else None
        summary.update(evaluate_images(result.image, reference, row["target_modality"], mask))
    write_synthetic(result.image, output, result.settings, overwrite=args.overwrite)
    return summary


def run(args: argparse.Namespace) -> int:
    rows = read_manifest(args.manifest)
    status_path, summary_path = args.out / STATUS_FILE, args.out / SUMMARY_FILE
    status = read_status(status_path)
    resuming = status_path.is_file()  # its status.json and summary.csv are this batch's own
    todo = [row for row in rows if not _done(status, row)]
    inputs = [args.manifest, *(p for row in rows for p in row_paths(row))]
    wanted = [image_output(case_output(args.out, row), f"case {row['case']!r}") for row in todo]
    wanted += [file_output(p, "--out", replaceable=resuming) for p in (status_path, summary_path)]
    planned = plan_outputs(wanted, inputs, overwrite=args.overwrite)
    targets = {row["case"]: output.target for row, output in zip(todo, planned)}
    failed = 0
    for row in track(rows, "batch", "case"):  # a bar on a terminal, one plain line per case in a log
        case = row["case"]
        if case not in targets:
            continue  # resumable: done in an earlier run
        try:
            summary = {"status": "done", "output": str(case_output(args.out, row))}
            summary.update(run_case(row, targets[case], args))
        except MedTransError as exc:
            summary = {"status": "failed", "error": str(exc)}
            failed += 1
            tqdm.write(f"case {case}: failed: {exc}")
        status[case] = summary
        write_text(status_path, json.dumps(status, indent=2, default=float), overwrite=True)
    write_summary(summary_path, rows, status)
    done = sum(1 for row in rows if status.get(row["case"], {}).get("status") == "done")
    print(f"{done} of {len(rows)} cases done; summary: {summary_path}")
    if failed:
        print(f"error: {failed} case(s) failed in this run; their errors are in {summary_path}", file=sys.stderr)
    return 1 if failed else 0


def write_summary(path: Path, rows: list[dict], status: dict[str, dict]) -> Path:
    """One CSV row per case of the manifest: its status, error or output, model, metrics and warnings."""
    keys = ["case", "input", "source_modality", "target_modality", "status", "error", "output", "model"]
    metric_keys = sorted({k for s in status.values() for k in s} - set(keys) - {"warnings"})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys + metric_keys + ["warnings"], extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, **status.get(row["case"], {"status": "pending"})})
    return write_text(path, text.getvalue(), overwrite=True)
