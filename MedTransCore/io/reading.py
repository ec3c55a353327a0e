"""Reading 3D images (NIfTI, NRRD, MetaImage, DICOM series) and refusing those that cannot be translated.

Reading goes header first: :func:`read_header` checks what SimpleITK would silently repair (a NIfTI ``pixdim``
of 0 or NaN becomes 1, a truncated ``.nii.gz`` is zero-filled, a NRRD ``spacings: nan`` becomes 1) and the
geometry of a DICOM series' slices, and gives the declared size and pixel type, so the memory guard can refuse a
volume before its voxels are read (a few MB of gzip can declare 25 GB). :func:`read_image` then reads the
voxels and refuses NaN or infinite ones in every format (SimpleITK reads them as 0 from NIfTI: those files are
checked with nibabel).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..memory import check_memory, read_bytes_per_voxel
from ._sitk import error_line, quiet_itk
from .dicom_series import find_series
from .nifti import check_nifti_header, count_nonfinite

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
_FORMATS = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "mha", ".mhd": "mha"}
# A label map: an integer image with at most this many distinct values, all in [0, LABEL_MAX_VALUE].
LABEL_MAX_DISTINCT = 16
LABEL_MAX_VALUE = 255
NIFTI_INTENT_LABEL = "1002"
_INTEGER_TYPES = {
    sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16,
    sitk.sitkUInt32, sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64,
}  # fmt: skip
_MODALITY_KEYS = ("0008|0060", "DICOM_Modality", "Modality")
_DESCRIPTION_KEYS = ("0008|103e", "SeriesDescription", "descrip")


@dataclass
class ImageInfo:
    """Where an image came from and what it looked like before the cast to float32.

    Args:
        path: the file or DICOM folder read.
        format: ``"nifti"``, ``"nrrd"``, ``"mha"`` or ``"dicom"``.
        dicom_modality: the DICOM Modality (``"CT"``, ``"MR"`` ...) or an equivalent metadata key, if any.
        series_description: the DICOM SeriesDescription or the file's description field, if any.
        pixel_type: the pixel type in the file (SimpleITK's wording, e.g. ``"16-bit signed integer"``).
        is_label_like: the image looks like a label map (only ever True with ``allow_label_map=True``).
        metadata: the file's key-value metadata (DICOM: the first slice's tags, plus series notes).
    """

    path: Path
    format: Literal["nifti", "nrrd", "mha", "dicom"]
    dicom_modality: str | None = None
    series_description: str | None = None
    pixel_type: str = ""
    is_label_like: bool = False
    metadata: dict[str, str] = field(default_factory=dict)


def format_of(path: str | Path) -> str:
    """The format (``nifti``, ``nrrd``, ``mha``) of a file name, or an ``InputError`` listing the supported ones."""
    name = Path(path).name.lower()
    for ext in SUPPORTED_EXTENSIONS:
        if name.endswith(ext):
            return _FORMATS[ext]
    raise InputError(
        f"{path}: unknown image format; use one of {', '.join(SUPPORTED_EXTENSIONS)} or a folder holding a DICOM series"
    )


@dataclass(frozen=True)
class ImageHeader:
    """What a file or DICOM folder declares, read without its voxels.

    Args:
        path: the file or DICOM folder.
        format: ``"nifti"``, ``"nrrd"``, ``"mha"`` or ``"dicom"``.
        size: ``(x, y, z)`` voxels; spacing: ``(x, y, z)`` mm.
        pixel_id: SimpleITK pixel type of the voxels as read (before the cast to float32).
        dicom_files: a DICOM series' slice files, ordered along the slice normal.
        metadata: the file's key-value metadata (DICOM: the first slice's tags).
    """

    path: Path
    format: Literal["nifti", "nrrd", "mha", "dicom"]
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    pixel_id: int
    dicom_files: tuple[Path, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def voxels(self) -> int:
        return math.prod(self.size)

    @property
    def pixel_bytes(self) -> int:
        return sitk.Image([1] * len(self.size), self.pixel_id).GetSizeOfPixelComponent()

    @property
    def read_bytes_per_voxel(self) -> float:
        """Peak bytes per voxel of :func:`read_image` (the file's pixels, the float32 copy, the checks)."""
        return read_bytes_per_voxel(self.pixel_bytes, self.pixel_id == sitk.sitkFloat32)

    def describe(self) -> str:
        return f"{'x'.join(map(str, self.size))} voxels of {sitk.GetPixelIDValueAsString(self.pixel_id)}"


def read_header(path: str | Path) -> ImageHeader:
    """Check a file's or DICOM folder's header and return what it declares, without reading a voxel.

    Args:
        path: a NIfTI/NRRD/MetaImage file or a folder holding one DICOM series.

    Raises:
        InputError: missing or unreadable path, unknown extension, a header SimpleITK would misread (spacing,
            NIfTI data offset or truncation), not a 3D scalar volume, a non-finite origin or direction, and for
            DICOM folders several series or slices that do not make one regular volume (see
            :mod:`MedTransCore.io.dicom_series`).
    """
    path = Path(path).expanduser()
    try:
        if not path.exists():
            raise InputError(f"{path}: no such file or folder")
        header = _dicom_header(path) if path.is_dir() else _file_header(path)
    except OSError as err:  # permission denied (on the file or a folder above it), an I/O error
        raise InputError(f"{path}: cannot read it ({err.strerror or err})") from None
    check_spacing(path, header.spacing, "spacing")
    return header


def read_image(
    path: str | Path, *, allow_label_map: bool = False, header: ImageHeader | None = None
) -> tuple[sitk.Image, ImageInfo]:
    """Read a 3D intensity image and check that it can be translated.

    Args:
        path: a NIfTI/NRRD/MetaImage file or a folder holding one DICOM series.
        allow_label_map: return label maps (``info.is_label_like``) instead of refusing them.
        header: :func:`read_header` of ``path`` when the caller has it already.

    Returns:
        the image as a 3D ``sitkFloat32`` image with its geometry, and its :class:`ImageInfo`.

    Raises:
        InputError: as :func:`read_header`, an unreadable file, NaN/Inf voxels, a constant image or (unless
            allowed) a label map.
        MemoryGuardError: reading the declared size would exceed the memory limit.
    """
    image, info = _read_any(path, header)
    array = sitk.GetArrayViewFromImage(image)
    low, high = array.min(), array.max()
    if low == high:
        raise InputError(f"{info.path}: the image is constant (every voxel is {low}); nothing to translate")
    distinct = _label_values(image, array, (low, high), info.metadata)
    del array
    if distinct is not None:
        if not allow_label_map:
            raise InputError(
                f"{info.path}: looks like a label map ({distinct} distinct values); translate an intensity image"
            )
        info.is_label_like = True
    return (image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)), info


def read_mask(path: str | Path, *, like: sitk.Image | None = None) -> sitk.Image:
    """Read a binary mask (non-zero = inside) as ``sitkUInt8`` 0/1.

    Args:
        path: any file or DICOM folder :func:`read_image` accepts (label maps included).
        like: put the mask on this image's grid: same grid -> its exact geometry, otherwise nearest-neighbour
            resampling in physical space.

    Raises:
        InputError: unreadable path (as :func:`read_image`), NaN voxels, or a mask empty on ``like``'s grid.
    """
    image, info = _read_any(path)
    mask = sitk.Cast(sitk.NotEqual(image, 0), sitk.sitkUInt8)
    if like is not None:
        if mask.GetSize() == like.GetSize() and _same_geometry(mask, like):
            mask.CopyInformation(like)
        else:
            mask = sitk.Resample(mask, like, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(mask).any():
        where = " on the image's grid (do they overlap?)" if like is not None else ""
        raise InputError(f"{info.path}: the mask is empty{where}")
    return mask


def _read_any(path: str | Path, header: ImageHeader | None = None) -> tuple[sitk.Image, ImageInfo]:
    """Read the voxels a checked header declares, once the memory guard agrees, and refuse NaN/Inf ones."""
    header = header or read_header(path)
    check_memory(header.voxels * header.read_bytes_per_voxel / 2**20, f"reading {header.path} ({header.describe()})")
    try:
        image, metadata = _read_voxels(header)
    except OSError as err:
        raise InputError(f"{header.path}: cannot read it ({err.strerror or err})") from None
    check_volume(header.path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    if header.format == "nifti":
        # SimpleITK has already turned NaN and Inf into 0 here: count them in the file itself.
        refuse_nonfinite(header.path, count_nonfinite(header.path), header.voxels)
    else:
        check_finite(header.path, sitk.GetArrayViewFromImage(image))
    if not np.all(np.isfinite(image.GetOrigin() + image.GetDirection())):
        raise InputError(f"{header.path}: the origin or direction in the header is not finite; fix the header")
    info = ImageInfo(
        path=header.path,
        format=header.format,
        dicom_modality=_modality_from(metadata) if header.format != "dicom" else _first(metadata, ("0008|0060",)),
        series_description=_first(metadata, _DESCRIPTION_KEYS if header.format != "dicom" else ("0008|103e",)),
        pixel_type=image.GetPixelIDTypeAsString(),
        metadata=metadata,
    )
    return image, info


def _file_header(path: Path) -> ImageHeader:
    fmt = format_of(path)
    with open(path, "rb") as f:  # fails here, in one line, when the file cannot be opened at all
        if not f.read(1):
            raise InputError(f"{path}: the file is empty")
    _check_header(path, fmt)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(_reason(path, err)) from None
    check_volume(path, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    if not np.all(np.isfinite(reader.GetOrigin() + reader.GetDirection())):
        raise InputError(f"{path}: the origin or direction in the header is not finite; fix the header")
    return ImageHeader(
        path=path,
        format=fmt,
        size=tuple(reader.GetSize()),
        spacing=tuple(reader.GetSpacing()),
        pixel_id=reader.GetPixelID(),
        metadata=_metadata(reader.GetMetaDataKeys(), reader.GetMetaData),
    )


def _dicom_header(folder: Path) -> ImageHeader:
    series = find_series(folder)
    check_volume(folder, 3, series.size, 1)
    return ImageHeader(
        path=folder,
        format="dicom",
        size=series.size,
        spacing=series.spacing,
        pixel_id=series.pixel_id,
        dicom_files=series.files,
        metadata={**series.metadata, "dicom_series_uid": series.uid, "dicom_files": str(len(series.files))},
    )


def _read_voxels(header: ImageHeader) -> tuple[sitk.Image, dict[str, str]]:
    if header.format == "dicom":
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in header.dicom_files])
        reader.LoadPrivateTagsOn()
    else:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(header.path))
    try:
        with quiet_itk():
            image = reader.Execute()
    except RuntimeError as err:
        raise InputError(_reason(header.path, err)) from None
    return image, header.metadata


def _metadata(keys, get) -> dict[str, str]:
    """The string entries of a reader's metadata (ITK shows others as placeholder text, or cannot pass them)."""
    values = {}
    for key in keys:
        try:
            value = get(key).strip()
        except (RuntimeError, TypeError, UnicodeDecodeError):  # a key or value that is not valid text
            continue
        if not value.startswith("[UNKNOWN"):
            values[key] = value
    return values


def _reason(path: Path, err: RuntimeError) -> str:
    """One line for a SimpleITK read failure."""
    text = str(err)
    if "spacing" in text.lower():
        return f"{path}: invalid voxel spacing in the header (zero, negative or not a number); fix the header"
    if "Unable to determine ImageIO reader" in text:
        return f"{path}: not a readable image file (empty, truncated or corrupt)"
    detail = error_line(err)
    # MetaImage reports a short read as "Reason: <errno text>", which only misleads.
    detail = "" if detail.startswith("Reason:") else f": {detail}"
    return f"{path}: cannot read the image (truncated or corrupt file?){detail}"


def check_volume(path: Path, dimension: int, size: tuple[int, ...], components: int) -> None:
    """Refuse anything but a single-component 3D image with at least 2 voxels along each axis."""
    shape = "x".join(map(str, size))
    if components > 1:
        raise InputError(
            f"{path}: has {components} components per voxel (vector or colour image); give a single-channel 3D volume"
        )
    if dimension > 3:
        raise InputError(f"{path}: is a {dimension}D image ({shape}); give one 3D volume (a single time point)")
    if dimension < 3 or min(size) < 2:
        raise InputError(f"{path}: need a 3D volume; got {shape} voxels (fewer than 2 along an axis is a 2D image)")


def check_spacing(path: Path, values, what: str) -> None:
    """Refuse spacings that are not finite positive numbers (``what`` names the header field)."""
    values = np.asarray(values, dtype=float)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise InputError(
            f"{path}: invalid voxel {what} {tuple(values.tolist())} in the header (must be positive numbers); "
            "fix the header"
        )


def refuse_nonfinite(path: Path, bad: int, total: int) -> None:
    """Refuse an image with ``bad`` NaN or infinite voxels out of ``total``: one rule (and message) for every format."""
    if bad:
        raise InputError(
            f"{path}: {bad} of {total} voxels are NaN or infinite; replace them (e.g. by the background value)"
        )


def check_finite(path: Path, array: np.ndarray) -> None:
    """:func:`refuse_nonfinite` on voxels in memory (integer types cannot hold NaN or Inf)."""
    if np.issubdtype(array.dtype, np.floating):
        refuse_nonfinite(path, int(array.size - np.count_nonzero(np.isfinite(array))), array.size)


def _label_values(
    image: sitk.Image, array: np.ndarray, value_range: tuple[float, float], metadata: dict[str, str]
) -> int | None:
    """Number of distinct values when the image looks like a label map, else ``None``."""
    if image.GetPixelID() not in _INTEGER_TYPES:
        return None
    says_label = metadata.get("intent_code") == NIFTI_INTENT_LABEL or any(
        k.startswith("Segmentation_") for k in metadata
    )
    small = value_range[0] >= 0 and value_range[1] <= LABEL_MAX_VALUE
    distinct = int(np.count_nonzero(np.bincount(array.ravel().astype(np.int64)))) if small else None
    if says_label or (distinct is not None and distinct <= LABEL_MAX_DISTINCT):
        return distinct if distinct is not None else len(np.unique(array))
    return None


def _same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    pairs = ((a.GetSpacing(), b.GetSpacing()), (a.GetOrigin(), b.GetOrigin()), (a.GetDirection(), b.GetDirection()))
    return all(np.allclose(x, y, rtol=tol, atol=tol) for x, y in pairs)


def _first(metadata: dict[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = metadata.get(key, "").strip()
        if value:
            return value
    return None


def _modality_from(metadata: dict[str, str]) -> str | None:
    # MetaImage stores its own enumeration (MET_MOD_CT ...); MET_MOD_UNKNOWN is its default.
    value = _first(metadata, _MODALITY_KEYS)
    if value is not None and value.startswith("MET_MOD_"):
        value = value[len("MET_MOD_") :]
    return None if value in (None, "UNKNOWN") else value


def _check_header(path: Path, fmt: str) -> None:
    """Check what SimpleITK would silently repair: spacing in the raw header, and NIfTI truncation."""
    if fmt == "nifti":
        check_nifti_header(path, check_spacing)
        return
    header = _text_header(path)
    if fmt == "nrrd":
        if m := re.search(r"^spacings:(.*)$", header, re.MULTILINE):
            check_spacing(path, _floats(m.group(1).split()), "spacing")
        if m := re.search(r"^space directions:(.*)$", header, re.MULTILINE):
            vectors = re.findall(r"\(([^)]*)\)", m.group(1))
            norms = [np.linalg.norm(_floats(vector.split(","))) for vector in vectors]
            check_spacing(path, norms, "spacing (length of a space direction)")
    elif m := re.search(r"^ElementSpacing\s*=(.*)$", header, re.MULTILINE):
        check_spacing(path, _floats(m.group(1).split()), "spacing")


def _floats(words: list[str]) -> list[float]:
    """Numbers of a header line; anything unparsable becomes NaN (and so fails the spacing check)."""
    values = []
    for word in words:
        try:
            values.append(float(word))
        except ValueError:
            values.append(float("nan"))
    return values


def _text_header(path: Path, limit: int = 65536) -> str:
    """The text header of a NRRD (up to the blank line) or MetaImage file (up to ``ElementDataFile``)."""
    with open(path, "rb") as f:
        head = f.read(limit)
    head = re.split(rb"\r?\n\r?\n|ElementDataFile", head, maxsplit=1)[0]
    return head.decode("latin-1")
