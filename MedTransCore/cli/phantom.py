"""``medtrans phantom``: write a paired multi-modal phantom case, or a CBCT simulated from a CT (``--cbct-from``)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..errors import InputError, OutputError
from ..phantoms import ANATOMIES, PHANTOM_MODALITIES, generate_phantom
from ..phantoms.generate import MAX_SIZE, MIN_SIZE
from .options import add_overwrite_option, add_seed_option, bounded_int, positive_float
from .outputs import file_output, image_output, plan_outputs

# What ``PhantomCase.save`` writes for a case of every modality (checked again when the files are moved).
FILES = (*(f"{m}.nii.gz" for m in PHANTOM_MODALITIES), "labels.nii.gz", "body_mask.nii.gz", "phantom.json")
# What ``--cbct-from`` writes: the simulated CBCT, the CT it comes from (the pair in one folder), the scan's FOV.
CBCT_FILES = ("CBCT.nii.gz", "CT.nii.gz", "field_of_view.nii.gz", "cbct_simulation.json")


def _mas(text: str) -> float | None:
    """``--mas``: a positive number, or ``none`` for a noise-free scan."""
    return None if text.strip().lower() == "none" else positive_float(text)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} must be a finite number, 0 or more")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("phantom", help="write a co-registered multi-modal phantom (CT, CBCT, MR ..., labels, mask)")
    p.add_argument("--anatomy", choices=ANATOMIES, default="head")
    add_seed_option(p)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--size",
        type=bounded_int(MIN_SIZE, MAX_SIZE),
        nargs="+",
        default=[96],
        metavar="N",
        help=f"voxels: N or X Y Z, each {MIN_SIZE} to {MAX_SIZE} (default 96)",
    )
    p.add_argument(
        "--spacing", type=positive_float, nargs="+", default=[2.0], metavar="MM", help="mm: S or X Y Z (default 2)"
    )
    scan = p.add_argument_group('cone-beam CT simulated with RTK (needs the cbct extra: pip install "medtrans[cbct]")')
    scan.add_argument(
        "--cbct-from",
        type=Path,
        metavar="CT",
        help="simulate a CBCT of this CT (HU): writes CBCT.nii.gz, CT.nii.gz, field_of_view.nii.gz and "
        "cbct_simulation.json to --out (--anatomy, --size and --spacing are not used)",
    )
    scan.add_argument(
        "--cbct-physics", action="store_true", help="phantoms: simulate the CBCT from the phantom's CT with RTK"
    )
    scan.add_argument("--views", type=bounded_int(8, 2000), default=200, help="projections over 360° (default 200)")
    scan.add_argument("--half-fan", action="store_true", help="shift the panel laterally: ~47 cm FOV instead of ~26")
    scan.add_argument(
        "--mas", type=_mas, default=1000.0, metavar="MAS", help="mAs of the scan, or none: noise-free (default 1000)"
    )
    scan.add_argument(
        "--scatter",
        type=_non_negative,
        default=0.1,
        metavar="SPR",
        help="scatter-to-primary ratio behind 20 cm of water (default 0.1)",
    )
    scan.add_argument("--energy", type=positive_float, default=60.0, metavar="KEV", help="effective keV (default 60)")
    scan.add_argument("--beam-hardening", type=_non_negative, default=0.0, metavar="B", help="0 to 1 (default 0: none)")
    scan.add_argument(
        "--recon-spacing", type=positive_float, metavar="MM", help="reconstruction voxels (default: CT's, at least 2)"
    )
    p.add_argument(
        "--progress-format",
        choices=("bar", "lines"),
        default="bar",
        help="lines: PROGRESS/RESULT lines on stdout for front ends (CBCT simulations)",
    )
    add_overwrite_option(p)
    p.set_defaults(run=run)


def _triple(values: list, name: str) -> tuple:
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) == 3:
        return tuple(values)
    raise InputError(f"--{name} takes one or three values, got {len(values)}")


def _scan_settings(args: argparse.Namespace):
    from ..phantoms import ConeBeamSettings

    try:
        return ConeBeamSettings(
            views=args.views,
            half_fan=args.half_fan,
            mas=args.mas,
            scatter_to_primary=args.scatter,
            energy_kev=args.energy,
            beam_hardening=args.beam_hardening,
            recon_spacing_mm=args.recon_spacing,
            seed=args.seed,
        )
    except ValueError as err:
        raise InputError(f"CBCT settings: {err}") from None


def _simulate(ct, args: argparse.Namespace, printer):
    """Run the simulation with progress shown by ``printer`` (a :class:`ProgressPrinter`)."""
    from ..phantoms import simulate_cbct

    def stage(fraction: float) -> str:
        return "forward projection" if fraction < 0.45 else "detector physics" if fraction < 0.55 else "FDK"

    result = simulate_cbct(ct, _scan_settings(args), progress=lambda f: printer(f, stage(f)))
    if result.metadata["truncated"]:
        printer.warning(
            f"the body is wider than the {result.metadata['field_of_view_mm']['diameter']:.0f} mm field of view: "
            "the CBCT is truncated there" + ("" if args.half_fan else " (--half-fan gives ~47 cm)")
        )
    return result


def run(args: argparse.Namespace) -> int:
    if args.cbct_from is not None:
        return _run_cbct(args)
    from ..io.reading import error_line
    from ..io.staging import StagedOutputs
    from ..io.writing import check_image_file, failure_reason, native_stderr
    from .progress import ProgressPrinter

    shape, spacing = _triple(args.size, "size"), _triple(args.spacing, "spacing")
    wanted = [
        file_output(args.out / name, "--out") if name.endswith(".json") else image_output(args.out / name, "--out")
        for name in FILES
    ]
    folder = plan_outputs(wanted, [], overwrite=args.overwrite)[0].target.parent
    settings = _scan_settings(args) if args.cbct_physics else None  # refuse bad settings before any work
    case = generate_phantom(anatomy=args.anatomy, seed=args.seed, shape=shape, spacing=spacing)
    if settings is not None:
        printer = ProgressPrinter(args.progress_format, description="simulating CBCT")
        try:
            result = _simulate(case.images["CT"], args, printer)
        finally:
            printer.close()
        case.images["CBCT"] = result.image
        case.info["cbct_physics"] = result.metadata
    images = {**case.images, "labels": case.labels, "body_mask": case.body_mask}
    with StagedOutputs() as staged:
        staging = staged.files(folder, FILES)
        try:
            with native_stderr():
                written = case.save(staging)
        except (RuntimeError, OSError) as err:
            raise OutputError(
                f"could not write the phantom to {args.out}: {failure_reason(staging, error_line(err))}"
            ) from None
        for key, image in images.items():
            check_image_file(staging / f"{key}.nii.gz", image, shown=args.out / f"{key}.nii.gz")
    print(
        f"wrote {args.anatomy} phantom (seed {args.seed}): {', '.join(Path(p).name for p in written.values())} to {args.out}/"
    )
    return 0


def _run_cbct(args: argparse.Namespace) -> int:
    from ..io import read_image, write_image
    from ..io.staging import StagedOutputs
    from ..io.writing import write_text
    from .outputs import synthetic_metadata
    from .progress import ProgressPrinter

    wanted = [
        file_output(args.out / name, "--out") if name.endswith(".json") else image_output(args.out / name, "--out")
        for name in CBCT_FILES
    ]
    cbct, ct_copy, fov, report = plan_outputs(wanted, [args.cbct_from], overwrite=args.overwrite)
    _scan_settings(args)  # bad settings are refused before the CT is read
    ct, _ = read_image(args.cbct_from)
    printer = ProgressPrinter(args.progress_format, description="simulating CBCT")
    try:
        result = _simulate(ct, args, printer)
    finally:
        printer.close()
    meta = result.metadata
    labels = {
        **synthetic_metadata({"target_modality": "CBCT", "source_modality": "CT", **meta["settings"]}),
        "descrip": "MedTrans SYNTHETIC CBCT simulated from CT (RTK)",
    }
    summary = {**meta, "source": str(args.cbct_from), "files": {n.split(".")[0]: n for n in CBCT_FILES}}
    with StagedOutputs() as staged:
        write_image(result.image, cbct.target, overwrite=args.overwrite, metadata=labels, outputs=staged)
        write_image(ct, ct_copy.target, overwrite=args.overwrite, synthetic=False, outputs=staged)
        write_image(
            result.field_of_view,
            fov.target,
            overwrite=args.overwrite,
            synthetic=False,
            metadata={"descrip": "MedTrans CBCT field of view (1: reconstructed)"},
            outputs=staged,
        )
        write_text(report.target, json.dumps(summary, indent=2) + "\n", overwrite=args.overwrite, outputs=staged)
    printer.result({**summary, "out": str(args.out)})
    if args.progress_format != "lines":
        timing = sum(meta["timings_s"].values())
        print(
            f"wrote a SYNTHETIC CBCT simulated from {args.cbct_from} ({args.views} views, "
            f"{'half' if args.half_fan else 'full'} fan, FOV {meta['field_of_view_mm']['diameter']:.0f} mm, "
            f"{timing:.0f} s): {', '.join(CBCT_FILES)} to {args.out}/"
        )
    return 0
