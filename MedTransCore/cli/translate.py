"""``medtrans translate``: one volume, or several co-registered sequences, to another modality.

Two forms: ``INPUT --source-modality MODALITY`` (one source), or ``--input MODALITY=PATH`` repeated (several
sequences of one patient, e.g. T1, T1c and FLAIR in, the missing T2 out). The first ``--input`` is the reference:
the others are resampled onto its grid and the result has exactly its geometry.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .options import add_modality_option, add_model_options, add_overwrite_option, bounded_int
from .outputs import image_output, plan_outputs, synthetic_metadata, synthetic_output, write_synthetic
from .progress import ProgressPrinter

DEFAULT_SAMPLES = 5
# Each sample is a whole translation; the spread needs at least two.
MIN_SAMPLES, MAX_SAMPLES = 2, 100


def add_parser(sub) -> None:
    p = sub.add_parser(
        "translate",
        help="translate a volume (or several sequences) to another modality (the output is synthetic)",
        description="Translate INPUT --source-modality MODALITY, or several co-registered sequences given as "
        "--input MODALITY=PATH (repeatable; the first is the reference grid), to --target-modality.",
    )
    p.add_argument("input", type=Path, nargs="?", help="NIfTI, NRRD or MHA file, or a folder with one DICOM series")
    add_modality_option(p, "--source-modality", help="modality of INPUT (required with INPUT)")
    p.add_argument(
        "--input",
        dest="inputs",
        action="append",
        metavar="MODALITY=PATH",
        help="a source sequence, repeatable (e.g. --input MR_T1=t1.nii.gz --input MR_FLAIR=flair.nii.gz): "
        "instead of INPUT --source-modality; the first is the reference grid",
    )
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


def source_arguments(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """``[(modality, path), ...]`` of the run, first the reference: the positional form or every ``--input``.

    Raises:
        InputError: both forms or neither, ``INPUT`` without ``--source-modality``, a ``--input`` that is not
            ``MODALITY=PATH``, an unknown modality, a modality given twice, or the target among several sources.
    """
    from ..modalities import MODALITIES
    from ..translate import check_source_modalities

    if args.inputs and (args.input is not None or args.source_modality is not None):
        raise InputError("give either INPUT --source-modality MODALITY or --input MODALITY=PATH, not both")
    if not args.inputs:
        if args.input is None:
            raise InputError("no input: give INPUT --source-modality MODALITY, or --input MODALITY=PATH (repeatable)")
        if args.source_modality is None:
            raise InputError("--source-modality is required with INPUT (or give --input MODALITY=PATH)")
        return [(args.source_modality, args.input)]
    sources = []
    for text in args.inputs:
        modality, sep, path = text.partition("=")
        modality = modality.strip()
        if not sep or not modality or not path:
            raise InputError(f"--input {text!r} is not MODALITY=PATH (e.g. --input MR_T1=t1.nii.gz)")
        if modality not in MODALITIES:
            raise InputError(f"--input {text!r}: unknown modality {modality!r}; choose one of {', '.join(MODALITIES)}")
        sources.append((modality, Path(path).expanduser()))
    modalities = [m for m, _ in sources]
    check_source_modalities(modalities[0], modalities[1:], args.target_modality)
    return sources


def run(args: argparse.Namespace) -> int:
    # Heavy imports (torch, MONAI, matplotlib) load only for the command that runs.
    from ..domain import domain_hints
    from ..io import read_header, read_image, write_image
    from ..io.staging import StagedOutputs
    from ..translate import check_file_memory, translate_image

    sources = source_arguments(args)
    (source_modality, source_path), extras = sources[0], sources[1:]
    wanted = [synthetic_output(args.output, args.target_modality)]
    if args.uncertainty:
        wanted.append(image_output(args.uncertainty, "--uncertainty"))
    output, *uncertainty = plan_outputs(wanted, [path for _, path in sources], overwrite=args.overwrite)
    # The memory guard sees the declared sizes before a voxel is read (a gzip bomb, a 6 m resampling grid).
    header = read_header(source_path)
    extra_headers = {modality: read_header(path) for modality, path in extras}
    samples = args.samples if args.uncertainty else 0
    check_file_memory(
        header, source_modality, args.target_modality, model=args.model, samples=samples, extra_sources=extra_headers
    )
    image, info = read_image(source_path, header=header)
    extra_images, extra_tags = {}, {}
    for modality, extra_header in extra_headers.items():
        extra_images[modality], extra_info = read_image(extra_header.path, header=extra_header)
        extra_tags[modality] = extra_info.dicom_modality
    more = {"extra_sources": extra_images, "extra_dicom_modalities": extra_tags} if extras else {}
    progress = ProgressPrinter(args.progress_format)
    try:
        result = translate_image(
            image,
            source_modality,
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
            hints=domain_hints(info.metadata),
            **more,
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
    limitations = str(result.bundle.metadata.get("limitations") or "").strip()
    payload = {"output": str(output.path), "uncertainty": str(std_path) if std_path else None, **result.settings}
    progress.result({**payload, "limitations": limitations} if limitations else payload)
    if args.progress_format == "bar":
        s = result.settings
        several = s.get("source_modalities") or []
        made_from = f" (from {' + '.join(several)})" if len(several) > 1 else ""
        print(
            f"wrote SYNTHETIC {s['target_modality']}{made_from} to {output.path} "
            f"(model {s['model']} {s['version']}, {s['device']})"
        )
        if std_path:
            print(f"wrote uncertainty (std over {args.samples} samples) to {std_path}")
        if limitations:
            print(f"model limitations: {limitations}")
    return 0
