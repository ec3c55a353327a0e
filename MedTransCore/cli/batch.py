"""``medtrans batch``: translate a cohort from a CSV manifest, resumably, past bad cases."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..errors import InputError, MedTransError
from ..io import read_image, read_mask
from ..metrics import evaluate_images
from ..translate import translate_image
from .options import add_model_options
from .outputs import write_synthetic

REQUIRED_COLUMNS = ("input", "source_modality", "target_modality")
OPTIONAL_COLUMNS = ("reference", "mask", "case")
STATUS_FILE = "status.json"


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="translate every case of a CSV manifest (resumable)")
    p.add_argument(
        "manifest", type=Path, help=f"CSV with columns {', '.join(REQUIRED_COLUMNS)} [, reference, mask, case]"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder: one sub-folder per case + summary.csv")
    add_model_options(p)
    p.set_defaults(run=run)


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of the manifest with relative paths resolved against the manifest's folder."""
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"manifest {path} lacks the column(s) {', '.join(missing)}")
        rows = [dict(row) for row in reader]
    if not rows:
        raise InputError(f"manifest {path} has no cases")
    for index, row in enumerate(rows):
        for key in ("input", "reference", "mask"):
            if row.get(key):
                p = Path(row[key])
                row[key] = str(p if p.is_absolute() else path.parent / p)
        row["case"] = row.get("case") or f"{index:04d}_{Path(row['input']).name.split('.')[0]}"
    return rows


def run_case(row: dict[str, str], out: Path, args: argparse.Namespace) -> dict:
    """Translate (and score) one case; returns its summary row."""
    image, info = read_image(Path(row["input"]))
    result = translate_image(
        image,
        row["source_modality"],
        row["target_modality"],
        model=args.model,
        steps=args.steps,
        seed=args.seed,
        device=args.device,
        strict=args.strict,
        dicom_modality=info.dicom_modality,
    )
    output = out / f"synthetic_{row['target_modality']}.nii.gz"
    write_synthetic(result.image, output, result.settings, overwrite=True)
    summary = {"output": str(output), "model": result.bundle.name, "warnings": " | ".join(result.warnings)}
    if row.get("reference"):
        reference, _ = read_image(Path(row["reference"]))
        mask = read_mask(Path(row["mask"]), like=reference) if row.get("mask") else None
        summary.update(evaluate_images(result.image, reference, row["target_modality"], mask))
    return summary


def run(args: argparse.Namespace) -> int:
    rows = read_manifest(args.manifest)
    args.out.mkdir(parents=True, exist_ok=True)
    status_path = args.out / STATUS_FILE
    status: dict[str, dict] = json.loads(status_path.read_text()) if status_path.is_file() else {}
    failed = 0
    for row in tqdm(rows, desc="batch", unit="case"):
        case = row["case"]
        if status.get(case, {}).get("status") == "done" and Path(status[case]["output"]).is_file():
            continue  # resumable: done in an earlier run
        try:
            summary = {"status": "done", **run_case(row, args.out / case, args)}
        except MedTransError as exc:
            summary = {"status": "failed", "error": str(exc)}
            failed += 1
            tqdm.write(f"case {case}: failed: {exc}")
        status[case] = summary
        status_path.write_text(json.dumps(status, indent=2, default=float))
    summary_path = write_summary(args.out / "summary.csv", rows, status)
    done = sum(1 for s in status.values() if s["status"] == "done")
    print(f"{done} of {len(rows)} cases done; summary: {summary_path}")
    if failed:
        print(f"error: {failed} case(s) failed in this run; their errors are in {summary_path}", file=sys.stderr)
    return 1 if failed else 0


def write_summary(path: Path, rows: list[dict], status: dict[str, dict]) -> Path:
    keys = ["case", "input", "source_modality", "target_modality", "status", "error", "output", "model"]
    metric_keys = sorted({k for s in status.values() for k in s} - set(keys) - {"warnings"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys + metric_keys + ["warnings"], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **status.get(row["case"], {"status": "pending"})})
    return path
