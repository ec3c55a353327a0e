"""``medtrans evaluate``: score a prediction against a reference (optionally after rigid alignment)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_modality_option, add_overwrite_option
from .outputs import file_output, plan_outputs
from .tables import metrics_table


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a prediction against a reference (MAE, PSNR, SSIM, ...)")
    p.add_argument("--prediction", type=Path, required=True)
    p.add_argument("--reference", type=Path, required=True)
    add_modality_option(p, "--modality", required=True, help="modality of both volumes (sets units and ranges)")
    p.add_argument("--mask", type=Path, help="binary mask on the prediction's grid (default: whole image)")
    p.add_argument("--register", choices=("rigid",), help="align the reference to the prediction first")
    p.add_argument("--json", type=Path, help="write the metrics (and any transform) as JSON")
    add_overwrite_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, MONAI, matplotlib) load only for the command that runs.
    from ..io import read_image, read_mask
    from ..io.staging import StagedOutputs
    from ..metrics import evaluate_images
    from ..registration import register_rigid
    from ..report import write_metrics_json

    inputs = [args.prediction, args.reference, args.mask]
    planned = plan_outputs([file_output(args.json, "--json")], inputs, overwrite=args.overwrite) if args.json else []
    prediction, _ = read_image(args.prediction)
    reference, _ = read_image(args.reference)
    mask = read_mask(args.mask, like=prediction) if args.mask else None
    extra = {}
    if args.register:
        registration = register_rigid(prediction, reference)
        reference = registration.resampled
        extra["registration"] = registration.info
        rot, shift = registration.info["rotation_deg"], registration.info["translation_mm"]
        print(
            "rigid alignment of the reference: rotation "
            + ", ".join(f"{v:.2f}" for v in rot)
            + " deg, translation "
            + ", ".join(f"{v:.2f}" for v in shift)
            + " mm"
        )
    metrics = evaluate_images(prediction, reference, args.modality, mask)
    print(metrics_table({"prediction vs reference": metrics}, args.modality))
    if planned:
        with StagedOutputs() as staged:
            # A short staged name: the report's own temporary name must fit the file system too.
            write_metrics_json(
                staged.file(planned[0].target, staged_name="metrics.json"), metrics, modality=args.modality, **extra
            )
    return 0
