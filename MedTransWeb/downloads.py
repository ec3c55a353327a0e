"""The synthetic volume as the browser downloads it: a NIfTI file or a zipped DICOM series, both marked synthetic.

The files are written by the core's own CLI writer, so a download carries the same metadata (model, version,
seed, ``MedTrans_Synthetic=true``; DICOM ImageType ``DERIVED\\SECONDARY\\SYNTHETIC``) as ``medtrans translate``.
"""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import SimpleITK as sitk

from MedTransCore.cli.outputs import write_synthetic


def download_names(settings: dict) -> dict[str, str]:
    """File names offered to the browser, e.g. ``synthetic_CT_from_CBCT.nii.gz``."""
    stem = f"synthetic_{settings['target_modality']}_from_{settings['source_modality']}"
    return {"nifti": f"{stem}.nii.gz", "dicom": f"{stem}_dicom.zip"}


def synthetic_file(image: sitk.Image, settings: dict, *, dicom: bool) -> bytes:
    """The bytes of ``image`` as a ``.nii.gz`` file, or (``dicom=True``, CT-like targets) a zipped DICOM series.

    Args:
        image: the synthetic volume with its geometry.
        settings: the run's settings (model, version, family, steps, seed, device, source/target modality).
        dicom: write a DICOM series (one folder in the zip) instead of NIfTI.
    """
    with tempfile.TemporaryDirectory(prefix="medtrans-download-") as folder:
        if not dicom:
            return write_synthetic(image, Path(folder) / "synthetic.nii.gz", settings, True).read_bytes()
        series = write_synthetic(
            image, Path(folder) / download_names(settings)["dicom"][: -len(".zip")], settings, True
        )
        archive = Path(folder) / "series.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(series.iterdir()):
                zf.write(file, f"{series.name}/{file.name}")
        return archive.read_bytes()
