"""``medtrans phantom``: write a paired multi-modal phantom case."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError, OutputError
from ..phantoms import ANATOMIES, PHANTOM_MODALITIES, generate_phantom
from ..phantoms.generate import MAX_SIZE, MIN_SIZE
from .options import add_overwrite_option, add_seed_option, bounded_int, positive_float
from .outputs import file_output, image_output, plan_outputs

# What ``PhantomCase.save`` writes for a case of every modality (checked again when the files are moved).
FILES = (*(f"{m}.nii.gz" for m in PHANTOM_MODALITIES), "labels.nii.gz", "body_mask.nii.gz", "phantom.json")


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
    add_overwrite_option(p)
    p.set_defaults(run=run)


def _triple(values: list, name: str) -> tuple:
    if len(values) == 1:
        return (values[0],) * 3
    if len(values) == 3:
        return tuple(values)
    raise InputError(f"--{name} takes one or three values, got {len(values)}")


def run(args: argparse.Namespace) -> int:
    from ..io.reading import error_line
    from ..io.staging import StagedOutputs
    from ..io.writing import check_image_file, failure_reason, native_stderr

    shape, spacing = _triple(args.size, "size"), _triple(args.spacing, "spacing")
    wanted = [
        file_output(args.out / name, "--out") if name.endswith(".json") else image_output(args.out / name, "--out")
        for name in FILES
    ]
    folder = plan_outputs(wanted, [], overwrite=args.overwrite)[0].target.parent
    case = generate_phantom(anatomy=args.anatomy, seed=args.seed, shape=shape, spacing=spacing)
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
