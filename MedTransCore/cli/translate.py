"""``medtrans translate``: one volume to another modality."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_modality_option, add_model_options, add_overwrite_option, bounded_int
from .outputs import image_output, plan_outputs, synthetic_metadata, synthetic_output, write_synthetic
from .progress import ProgressPrinter

DEFAULT_SAMPLES = 5
# Each sample is a whole translation; the spread needs at least two.
MIN_SAMPLES, MAX_SAMPLES = 2, 100


def add_parser(sub) -> None:
    p = sub.add_parser("translate", help="translate a volume to another modality (the output is synthetic)")
    p.add_argument("input", type=Path, help="NIfTI, NRRD or MHA file, or a folder with one DICOM series")
    add_modality_option(p, "--source-modality", required=True)
    add_modality_option(p, "--target-modality", required=True)
    p.add_argument("--output", "-o", type=Path, required=True, help="image file, or a folder for a DICOM series (CT)")
    add_model_options(p)
    p.add_argument("--uncertainty", type=Path, metavar="STD_OUT", help="also write the voxel-wise std over samples")
    p.add_argument(
        "--samples",
        type=bounded_int(MIN_SAMPLES, MAX_SAMPLES),
        default=DEFAULT_SAMPLES,
        help=f"samples for --uncertainty, {MIN_SAMPLES} to {MAX_SAMPLES} (default {DEFAULT_SAMPLES})",
    )
    add_overwrite_option(p)
    p.add_argument("--progress-format", choices=("bar", "lines"), default="bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, MONAI, matplotlib) load only for the command that runs.
    from ..io import read_header, read_image, write_image
    from ..io.staging import StagedOutputs
    from ..translate import check_file_memory, translate_image

    wanted = [synthetic_output(args.output, args.target_modality)]
    if args.uncertainty:
        wanted.append(image_output(args.uncertainty, "--uncertainty"))
    output, *uncertainty = plan_outputs(wanted, [args.input], overwrite=args.overwrite)
    # The memory guard sees the declared size before a voxel is read (a gzip bomb, a 6 m resampling grid).
    header = read_header(args.input)
    samples = args.samples if args.uncertainty else 0
    check_file_memory(header, args.source_modality, args.target_modality, model=args.model, samples=samples)
    image, info = read_image(args.input, header=header)
    progress = ProgressPrinter(args.progress_format)
    try:
        result = translate_image(
            image,
            args.source_modality,
            args.target_modality,
            model=args.model,
            steps=args.steps,
            sampler=args.sampler,
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
    with StagedOutputs() as staged:  # the synthetic volume and its uncertainty appear together or not at all
        write_synthetic(result.image, output.target, result.settings, args.overwrite, outputs=staged)
        if uncertainty:
            meta = synthetic_metadata({**result.settings, "map": "uncertainty (std)"})
            write_image(
                result.uncertainty, uncertainty[0].target, overwrite=args.overwrite, metadata=meta, outputs=staged
            )
    std_path = uncertainty[0].path if uncertainty else None
    progress.result({"output": str(output.path), "uncertainty": str(std_path) if std_path else None, **result.settings})
    if args.progress_format == "bar":
        s = result.settings
        print(
            f"wrote SYNTHETIC {s['target_modality']} to {output.path} (model {s['model']} {s['version']}, {s['device']})"
        )
        if std_path:
            print(f"wrote uncertainty (std over {args.samples} samples) to {std_path}")
    return 0
