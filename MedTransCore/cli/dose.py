"""``medtrans dose``: plan on the CT, recompute on the synthetic CT, compare with gamma and DVH."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .options import add_overwrite_option, positive_float
from .outputs import file_output, image_output, plan_outputs

#: What ``--out`` receives, by key (as :data:`MedTransCore.dose.report.FILES`; kept here so the command starts fast).
FILE_KEYS = ("ct_dose", "sct_dose", "difference", "gamma", "structures", "report", "json")
OUTPUT_FILES = (
    "ct_dose.nii.gz",
    "sct_dose.nii.gz",
    "dose_difference.nii.gz",
    "gamma_2pct_2mm.nii.gz",
    "structures.nii.gz",
    "dose_report.png",
    "dose.json",
)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "dose",
        help="dose check: a photon plan optimised on the CT, recomputed on the sCT; gamma pass rates and DVH",
        description=(
            "Optimise a photon plan on the real CT (pyRadPlan), recompute the same fluence on the synthetic CT, and "
            "compare: dose difference, 3D gamma (1%%/1mm, 2%%/2mm, 3%%/3mm, global, 10%% low-dose threshold) and "
            "DVH metrics. Without --target a spherical test target is placed (a test plan, not a clinical one)."
        ),
    )
    p.add_argument("--ct", type=Path, required=True, help="the real CT (HU)")
    p.add_argument("--sct", type=Path, required=True, help="the synthetic CT (HU; resampled onto the CT's grid)")
    p.add_argument("--target", type=Path, help="target mask (default: a test target, see --target-centre)")
    p.add_argument(
        "--target-centre",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="physical centre (mm) of the test target (default: the body's centre)",
    )
    p.add_argument(
        "--target-radius", type=positive_float, default=20.0, metavar="MM", help="test target radius (default 20)"
    )
    p.add_argument("--oar", action="append", default=[], metavar="NAME=MASK", help="organ at risk mask (repeatable)")
    p.add_argument("--beams", type=int, default=7, help="coplanar, equally spaced photon beams (default 7)")
    p.add_argument("--prescription", type=positive_float, default=60.0, metavar="GY", help="target dose (default 60)")
    p.add_argument(
        "--dose-grid", type=positive_float, default=3.0, metavar="MM", help="dose calculation grid (default 3 mm)"
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--progress-format",
        choices=("bar", "lines"),
        default="bar",
        help="lines: PROGRESS/RESULT lines on stdout for front ends (the RESULT json is dose.json's content)",
    )
    add_overwrite_option(p)
    p.set_defaults(run=run)


def _oars(values: list[str]) -> dict[str, Path]:
    oars = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--oar takes NAME=MASK, got {value!r}")
        if name in oars:
            raise InputError(f"--oar {name} is given twice")
        oars[name] = Path(path)
    return oars


def run(args: argparse.Namespace) -> int:
    from ..dose import PlanSettings, run_dose_check
    from ..dose.report import write_dose_outputs
    from ..io import read_image, read_mask
    from ..io.staging import StagedOutputs
    from .progress import ProgressPrinter

    oar_paths = _oars(args.oar)
    settings = PlanSettings(
        beams=args.beams,
        prescription_gy=args.prescription,
        dose_grid_mm=args.dose_grid,
        target_radius_mm=args.target_radius,
    )
    wanted = [
        file_output(args.out / name, "--out")
        if not name.endswith(".nii.gz")
        else image_output(args.out / name, "--out")
        for name in OUTPUT_FILES
    ]
    inputs = [args.ct, args.sct, args.target, *oar_paths.values()]
    folder = plan_outputs(wanted, inputs, overwrite=args.overwrite)[0].target.parent
    ct, _ = read_image(args.ct)
    sct, _ = read_image(args.sct)
    target = read_mask(args.target) if args.target else None
    oars = {name: read_mask(path) for name, path in oar_paths.items()}
    progress = ProgressPrinter(args.progress_format, description="dose check")
    try:
        check = run_dose_check(
            ct,
            sct,
            target=target,
            target_centre_mm=tuple(args.target_centre) if args.target_centre else None,
            oars=oars,
            settings=settings,
            progress=progress,
        )
        progress(0.99, "writing the results")
        with StagedOutputs() as staged:
            staging = staged.files(folder, OUTPUT_FILES)
            write_dose_outputs(check, staging)
    finally:
        progress.close()
    summary = check.summary()
    progress.result({**summary, "files": {key: str(folder / name) for key, name in zip(FILE_KEYS, OUTPUT_FILES)}})
    if args.progress_format == "lines":
        return 0
    if check.pair.test_plan:
        print("TEST PLAN: a spherical target placed by MedTrans (give --target for a real one)")
    if check.pair.grid_note:
        print(f"the sCT was resampled onto the CT's grid ({check.pair.grid_note})")
    rates = ", ".join(f"{k} {v:.1f} %" for k, v in summary["gamma_pass_rate"].items())
    print(f"gamma pass rate (global, 10 % low-dose threshold): {rates}")
    for structure, metrics in summary["dvh"].items():
        cells = ", ".join(f"{m} {v['ct']:.2f}/{v['sct']:.2f} ({v['difference']:+.2f})" for m, v in metrics.items())
        print(f"{structure} (Gy, CT/sCT): {cells}")
    print(f"wrote {folder}")
    return 0
