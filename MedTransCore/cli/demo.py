"""``medtrans demo``: a phantom CBCT translated to CT with the default shipped model, scored and reported."""

from __future__ import annotations

import argparse
from pathlib import Path

import SimpleITK as sitk

from ..io import write_image
from .outputs import synthetic_metadata
from .progress import ProgressPrinter
from .tables import metrics_table

SOURCE, TARGET = "CBCT", "CT"
# The embedded default case: a seeded head phantom (the same volume on every machine). Seed 4242 is in no shipped
# model's training (0-47), validation (1000-1003) or test (2000-2002) seeds: the demo shows an unseen phantom.
DEMO_CASE = {"anatomy": "head", "seed": 4242, "shape": (112, 112, 96), "spacing": (2.4, 2.4, 2.4)}
BASELINES = ("identity", "histogram_matching")


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="translate a phantom CBCT to CT with the shipped model and write a report")
    p.add_argument("--out", type=Path, default=Path("medtrans-demo"), help="output folder (default ./medtrans-demo)")
    p.add_argument("--model", help="bundle name or folder (default: the best installed CBCT->CT model)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.set_defaults(run=run)


def _write(image: sitk.Image, path: Path, metadata: dict | None = None, synthetic: bool = False) -> Path:
    return write_image(image, path, overwrite=True, metadata=metadata, synthetic=synthetic)


def _phantom_notes(image: sitk.Image) -> dict[str, str]:
    """The generator's marker of a phantom image, as ``write_image`` metadata."""
    key = "ITK_FileNotes"
    return {"descrip": image.GetMetaData(key)} if image.HasMetaDataKey(key) else {}


def run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, MONAI, matplotlib) load only for the command that runs.
    from ..metrics import difference_map, evaluate_images
    from ..phantoms import generate_phantom
    from ..report import write_metrics_json, write_report
    from ..translate import select_model, translate_image

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    bundle = select_model(SOURCE, TARGET, args.model)
    print(
        f"demo: head phantom (seed {DEMO_CASE['seed']}), {SOURCE} -> {TARGET} with model {bundle.name!r} ({bundle.family})"
    )
    case = generate_phantom(modalities=[SOURCE, TARGET], **DEMO_CASE)
    source, reference, mask = case.images[SOURCE], case.images[TARGET], case.body_mask

    progress = ProgressPrinter("bar", description="demo")
    try:
        result = translate_image(source, SOURCE, TARGET, model=bundle.path, device=args.device, progress=progress)
    finally:
        progress.close()
    synthetic = result.image
    difference = sitk.GetImageFromArray(
        difference_map(sitk.GetArrayFromImage(synthetic), sitk.GetArrayFromImage(reference))
    )
    difference.CopyInformation(synthetic)

    paths = {
        # The phantom's marker stays in the files (NIfTI descrip): translating them again picks phantom models.
        "source": _write(source, out / f"source_{SOURCE}.nii.gz", _phantom_notes(source)),
        "reference": _write(reference, out / f"reference_{TARGET}.nii.gz", _phantom_notes(reference)),
        "body_mask": _write(mask, out / "body_mask.nii.gz"),
        "synthetic": _write(synthetic, out / f"synthetic_{TARGET}.nii.gz", synthetic_metadata(result.settings), True),
        "difference": _write(
            difference,
            out / "difference.nii.gz",
            synthetic_metadata({**result.settings, "map": "synthetic - reference"}),
            True,
        ),
    }
    model_metrics = evaluate_images(synthetic, reference, TARGET, mask)
    source_metrics = evaluate_images(source, reference, TARGET, mask)
    columns = {"synthetic vs reference": model_metrics}
    baseline_metrics = None
    if bundle.family not in BASELINES:
        # The bar a trained model has to clear, measured on the same case.
        matched = translate_image(source, SOURCE, TARGET, model="histogram-matching", device="cpu").image
        baseline_metrics = evaluate_images(matched, reference, TARGET, mask)
        columns["histogram matching vs reference"] = baseline_metrics
    columns["source vs reference"] = source_metrics
    notes = [f"model: {bundle.name} {bundle.metadata['version']} ({bundle.family}), device {result.settings['device']}"]
    if bundle.family in BASELINES:
        notes.append(
            f"no trained {SOURCE}->{TARGET} model is installed: this is the '{bundle.family}' BASELINE, not a trained model"
        )
    else:
        notes.append(bundle.metadata.get("limitations") or "a demonstration model")
    notes.append("demo data: a simulated head phantom, not a patient")
    paths["metrics"] = write_metrics_json(
        out / "metrics.json",
        model_metrics,
        source_vs_reference=source_metrics,
        histogram_matching_vs_reference=baseline_metrics,
        settings=result.settings,
        warnings=result.warnings,
        files={k: v.name for k, v in paths.items()},
    )
    paths["report"] = write_report(
        out / "report.png",
        source=source,
        synthetic=synthetic,
        reference=reference,
        source_modality=SOURCE,
        target_modality=TARGET,
        metrics=model_metrics,
        baseline_metrics=source_metrics,
        title="MedTrans demo: simulated head phantom",
        notes=notes,
    )
    print()
    print(metrics_table(columns, TARGET))
    print()
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {', '.join(p.name for p in paths.values())} to {out}/")
    return 0
