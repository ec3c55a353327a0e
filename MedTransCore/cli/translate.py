"""``medtrans translate``: one volume to another modality."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .options import add_modality_option, add_model_options
from .outputs import check_output_path, synthetic_metadata, write_synthetic
from .progress import ProgressPrinter

DEFAULT_SAMPLES = 5


def add_parser(sub) -> None:
    p = sub.add_parser("translate", help="translate a volume to another modality (the output is synthetic)")
    p.add_argument("input", type=Path, help="NIfTI, NRRD or MHA file, or a folder with one DICOM series")
    add_modality_option(p, "--source-modality", required=True)
    add_modality_option(p, "--target-modality", required=True)
    p.add_argument("--output", "-o", type=Path, required=True, help="image file, or a folder for a DICOM series (CT)")
    add_model_options(p)
    p.add_argument("--uncertainty", type=Path, metavar="STD_OUT", help="also write the voxel-wise std over samples")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="samples for --uncertainty (default 5)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--progress-format", choices=("bar", "lines"), default="bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, MONAI, matplotlib) load only for the command that runs.
    from ..io import read_image, write_image
    from ..translate import translate_image

    outputs = [args.output] + ([args.uncertainty] if args.uncertainty else [])
    for output in outputs:
        check_output_path(output, [args.input], args.overwrite)
    if args.uncertainty and args.uncertainty == args.output:
        raise InputError("--uncertainty must differ from --output")
    image, info = read_image(args.input)
    progress = ProgressPrinter(args.progress_format)
    try:
        result = translate_image(
            image,
            args.source_modality,
            args.target_modality,
            model=args.model,
            steps=args.steps,
            seed=args.seed,
            device=args.device,
            uncertainty_samples=args.samples if args.uncertainty else 0,
            progress=progress,
            strict=args.strict,
            dicom_modality=info.dicom_modality,
        )
    finally:
        progress.close()
    for text in result.warnings:
        progress.warning(text)
    written = write_synthetic(result.image, args.output, result.settings, args.overwrite)
    std_path = None
    if result.uncertainty is not None:
        meta = synthetic_metadata({**result.settings, "map": "uncertainty (std)"})
        std_path = write_image(result.uncertainty, args.uncertainty, overwrite=args.overwrite, metadata=meta)
    progress.result({"output": str(written), "uncertainty": str(std_path) if std_path else None, **result.settings})
    if args.progress_format == "bar":
        s = result.settings
        print(f"wrote SYNTHETIC {s['target_modality']} to {written} (model {s['model']} {s['version']}, {s['device']})")
        if std_path:
            print(f"wrote uncertainty (std over {args.samples} samples) to {std_path}")
    return 0
