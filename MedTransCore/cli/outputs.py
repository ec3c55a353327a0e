"""Writing synthetic volumes from the CLI: image files by extension, a DICOM series for a folder."""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from ..io import SUPPORTED_EXTENSIONS, write_dicom_series, write_image
from ..modalities import get_modality


def is_image_file(path: Path) -> bool:
    return any(str(path).lower().endswith(ext) for ext in SUPPORTED_EXTENSIONS)


def check_output_path(output: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse before any work is done: the output may not be an input, nor exist unless ``overwrite``."""
    for path in inputs:
        same_file = output.exists() and path.exists() and output.resolve() == path.resolve()
        if same_file or output.absolute() == path.absolute():
            raise InputError(f"the output {output} is the input; choose another path (sources are never overwritten)")
    if output.exists() and not overwrite:
        raise InputError(f"{output} already exists; pass --overwrite to replace it")


def synthetic_metadata(settings: dict) -> dict[str, str]:
    """Key-value metadata recorded in every synthetic file."""
    meta = {"MedTrans_Synthetic": "true"}
    meta.update({f"MedTrans_{key}": str(value) for key, value in settings.items()})
    return meta


def write_synthetic(image: sitk.Image, output: Path, settings: dict, overwrite: bool) -> Path:
    """Write a synthetic volume: NIfTI/NRRD/MHA by extension, or a DICOM series when ``output`` is a folder."""
    target = settings["target_modality"]
    if is_image_file(output):
        return write_image(image, output, overwrite=overwrite, metadata=synthetic_metadata(settings), synthetic=True)
    if output.suffix:
        raise InputError(f"unknown output extension {output.suffix!r}; use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    if not get_modality(target).is_ct:
        raise InputError("a DICOM series is written only for CT-like targets; give an image file name for MR")
    description = f"SYNTHETIC {target} from {settings['source_modality']} ({settings['model']})"
    return write_dicom_series(image, output, modality="CT", series_description=description, overwrite=overwrite)
