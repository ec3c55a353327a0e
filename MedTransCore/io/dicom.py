"""Writing a synthetic volume as a DICOM series (one file per slice) that says it is synthetic.

Reading DICOM folders lives with the other readers: :mod:`MedTransCore.io.dicom_series` checks a series' slices,
:mod:`MedTransCore.io.reading` reads it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import InputError, OutputError
from .reading import check_finite, check_volume, error_line
from .staging import StagedOutputs, staged
from .writing import failure_reason

DICOM_MODALITIES = ("CT", "MR")
IMAGE_TYPE = "DERIVED\\SECONDARY\\SYNTHETIC"
SYNTHETIC_NOTE = f"SYNTHETIC image computed by MedTrans {__version__}; not for diagnosis"
_INT16 = (-32768, 32767)
# The scaled range leaves headroom below the int16 limits for the rounding of slope/intercept strings.
_SCALED_LEVELS = 65000.0


def generate_uid() -> str:
    """A new DICOM UID from a random UUID (the ``2.25`` root of DICOM PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"


def write_dicom_series(
    image: sitk.Image,
    folder: str | Path,
    *,
    modality: str = "CT",
    series_description: str,
    patient_id: str = "MEDTRANS-SYNTHETIC",
    patient_name: str = "SYNTHETIC^MEDTRANS",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    overwrite: bool = False,
    outputs: StagedOutputs | None = None,
) -> Path:
    """Write a synthetic 3D volume as a DICOM series, atomically (a staging folder renamed at the end).

    Pixels are stored as int16 with RescaleSlope/Intercept: CT values that fit int16 keep slope 1 (HU within
    0.5), anything else is scaled to the int16 range. The series is marked synthetic in ImageType
    (``DERIVED\\SECONDARY\\SYNTHETIC``), SeriesDescription, ProtocolName, DerivationDescription and
    ImageComments; Study/Series/SOP/FrameOfReference UIDs are new unless given. Oblique and left-handed
    geometries are kept (the slice order is reversed when the slice axis points against row x column).

    Args:
        image: 3D scalar image (HU for CT).
        folder: destination folder for the ``IM00001.dcm`` ... files.
        modality: DICOM Modality, ``"CT"`` or ``"MR"``.
        series_description: SeriesDescription (``"SYNTHETIC "`` is prefixed when missing; 64 characters kept).
        patient_id: PatientID (0010,0020).
        patient_name: PatientName (0010,0010).
        study_uid: put the series in this study (e.g. the source's); ``None`` makes a new study.
        frame_of_reference_uid: share the source's frame of reference; ``None`` makes a new one.
        overwrite: replace an existing folder that holds only ``.dcm`` files.
        outputs: stage the series with the other outputs of a run (their owner commits them together); by
            default the folder is moved into place before this returns.

    Returns:
        the folder written.

    Raises:
        InputError: not a 3D scalar image, an unsupported modality, NaN/Inf values, a sheared geometry, an
            existing folder without ``overwrite``, or the writer failed (``OutputError``; nothing is left behind).
    """
    folder = Path(folder).expanduser()
    if modality not in DICOM_MODALITIES:
        raise InputError(f"cannot write a DICOM series of modality {modality!r}; use one of {DICOM_MODALITIES}")
    check_volume(folder, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    volume = _right_handed(sitk.Cast(image, sitk.sitkFloat64))
    check_finite(folder, sitk.GetArrayViewFromImage(volume))
    slope, intercept = _rescale(sitk.GetArrayViewFromImage(volume), modality)
    lowest, highest = intercept + slope * _INT16[0], intercept + slope * _INT16[1]
    volume = sitk.Clamp(volume, sitk.sitkFloat64, lowest, highest)

    now = datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    d = volume.GetDirection()
    spacing = volume.GetSpacing()
    normal = np.array(d[2::3])
    description = series_description if "SYNTHETIC" in series_description.upper() else f"SYNTHETIC {series_description}"
    series_tags = {
        "0008|0008": IMAGE_TYPE,
        "0008|0060": modality,
        "0008|103e": description[:64],
        "0018|1030": "MedTrans SYNTHETIC",
        "0008|2111": SYNTHETIC_NOTE,
        "0020|4000": SYNTHETIC_NOTE,
        "0018|1020": f"MedTrans {__version__}",
        "0010|0010": patient_name,
        "0010|0020": patient_id,
        "0020|000d": study_uid or generate_uid(),
        "0020|000e": generate_uid(),
        "0020|0052": frame_of_reference_uid or generate_uid(),
        "0020|0011": "901",
        **{tag: date for tag in ("0008|0020", "0008|0021", "0008|0023", "0008|0012")},
        **{tag: time for tag in ("0008|0030", "0008|0031", "0008|0033", "0008|0013")},
        "0020|0037": _ds(d[0], d[3], d[6], d[1], d[4], d[7]),
        "0018|0050": _ds(spacing[2]),
        "0018|0088": _ds(spacing[2]),
        "0028|1052": _ds(intercept),
        "0028|1053": _ds(slope),
        # int16 storage; the writer rounds (value - intercept) / slope.
        "0028|0100": "16",
        "0028|0101": "16",
        "0028|0102": "15",
        "0028|0103": "1",
    }
    if modality == "CT":
        series_tags["0028|1054"] = "HU"
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # use the UIDs set here, not ones GDCM would invent
    with staged(outputs) as staging_outputs:
        staging = staging_outputs.folder(folder, overwrite=overwrite, replaceable="*.dcm")
        for k in range(volume.GetDepth()):
            position = volume.TransformIndexToPhysicalPoint((0, 0, k))
            # A one-slice 3D image, not a 2D one: after any DICOM read in the process, GDCM would otherwise
            # write SpacingBetweenSlices from the 2D slice's default spacing of 1.
            piece = volume[:, :, k : k + 1]
            for tag, value in series_tags.items():
                piece.SetMetaData(tag, value)
            piece.SetMetaData("0008|0018", generate_uid())
            piece.SetMetaData("0020|0013", str(k + 1))
            piece.SetMetaData("0020|0032", _ds(*position))
            piece.SetMetaData("0020|1041", _ds(float(np.dot(position, normal))))
            writer.SetFileName(str(staging / f"IM{k + 1:05d}.dcm"))
            try:
                writer.Execute(piece)
            except RuntimeError as err:
                reason = failure_reason(staging, error_line(err))  # GDCM words a full disk as a pixel-type problem
                raise OutputError(f"could not write the DICOM series {folder}: {reason}") from None
    return folder


def _right_handed(image: sitk.Image) -> sitk.Image:
    """The same voxels in physical space with slice axis = row x column (what DICOM readers assume)."""
    d = np.array(image.GetDirection()).reshape(3, 3)
    along = float(np.dot(np.cross(d[:, 0], d[:, 1]), d[:, 2]))
    if abs(abs(along) - 1.0) > 1e-4:
        raise InputError("the image geometry is sheared (slice axis not perpendicular to the slices); resample first")
    if along > 0:
        return image
    flipped = sitk.GetImageFromArray(sitk.GetArrayViewFromImage(image)[::-1].copy())
    flipped.SetSpacing(image.GetSpacing())
    flipped.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, image.GetDepth() - 1)))
    d[:, 2] *= -1
    flipped.SetDirection(d.ravel().tolist())
    return flipped


def _rescale(array: np.ndarray, modality: str) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept mapping int16 to the values of ``array``."""
    low, high = float(array.min()), float(array.max())
    if modality == "CT" and _INT16[0] <= low and high <= _INT16[1]:
        return 1.0, 0.0
    slope = (high - low) / _SCALED_LEVELS or 1.0
    # Round through the written strings so the writer and any reader use the same numbers.
    return float(_ds(slope)), float(_ds((high + low) / 2.0))


def _ds(*values: float) -> str:
    """DICOM decimal strings (at most 16 characters each), backslash-separated."""
    return "\\".join(f"{v:.10g}" for v in values)
