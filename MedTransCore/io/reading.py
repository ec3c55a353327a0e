"""Reading 3D images (NIfTI, NRRD, MetaImage, DICOM series) and refusing those that cannot be translated.

SimpleITK silently "repairs" some broken files (a NIfTI ``pixdim`` of 0 or NaN becomes 1, a truncated
``.nii.gz`` is zero-filled, a NRRD ``spacings: nan`` becomes 1), so the headers are checked here before
the voxels are trusted.
"""

from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

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


def read_image(path: str | Path, *, allow_label_map: bool = False) -> tuple[sitk.Image, ImageInfo]:
    """Read a 3D intensity image and check that it can be translated.

    Args:
        path: a NIfTI/NRRD/MetaImage file or a folder holding a DICOM series (the largest one if several).
        allow_label_map: return label maps (``info.is_label_like``) instead of refusing them.

    Returns:
        the image as a 3D ``sitkFloat32`` image with its geometry, and its :class:`ImageInfo`.

    Raises:
        InputError: missing path, unknown extension, unreadable file, not a 3D scalar volume, invalid
            spacing, NaN/Inf voxels, a constant image or (unless allowed) a label map.
    """
    image, info = _read_any(path)
    array = sitk.GetArrayViewFromImage(image)
    check_finite(info.path, array)
    low, high = array.min(), array.max()
    if low == high:
        raise InputError(f"{info.path}: the image is constant (every voxel is {low}); nothing to translate")
    distinct = _label_values(image, array, (low, high), info.metadata)
    if distinct is not None:
        if not allow_label_map:
            raise InputError(
                f"{info.path}: looks like a label map ({distinct} distinct values); translate an intensity image"
            )
        info.is_label_like = True
    return sitk.Cast(image, sitk.sitkFloat32), info


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
    check_finite(info.path, sitk.GetArrayViewFromImage(image))
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


def _read_any(path: str | Path) -> tuple[sitk.Image, ImageInfo]:
    """Read a file or DICOM folder and check that it is a 3D scalar volume with a valid geometry."""
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        image, info = _read_dicom_folder(path)
    else:
        fmt = format_of(path)
        image, metadata = _read_file(path, fmt)
        info = ImageInfo(
            path=path,
            format=fmt,
            dicom_modality=_modality_from(metadata),
            series_description=_first(metadata, _DESCRIPTION_KEYS),
            pixel_type=image.GetPixelIDTypeAsString(),
            metadata=metadata,
        )
    check_volume(path, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    check_spacing(path, image.GetSpacing(), "spacing")
    if not np.all(np.isfinite(image.GetOrigin() + image.GetDirection())):
        raise InputError(f"{path}: the origin or direction in the header is not finite; fix the header")
    return image, info


def _read_dicom_folder(folder: Path) -> tuple[sitk.Image, ImageInfo]:
    """Read the largest DICOM series directly inside ``folder`` (GDCM sorts the slices by position)."""
    try:
        series = {sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid)
                  for sid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))}  # fmt: skip
    except RuntimeError as err:
        raise InputError(_reason(folder, err)) from None
    if not series:
        raise InputError(
            f"{folder}: no DICOM series in this folder (sub-folders are not searched); give the folder of one "
            f"series or an image file ({', '.join(SUPPORTED_EXTENSIONS)})"
        )
    chosen = max(series, key=lambda sid: len(series[sid]))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series[chosen])
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOn()
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(_reason(folder, err)) from None
    metadata = _metadata(reader.GetMetaDataKeys(0), lambda key: reader.GetMetaData(0, key))
    metadata.update(dicom_series_uid=chosen, dicom_series_count=str(len(series)), dicom_files=str(len(series[chosen])))
    if len(series) > 1:
        metadata["series_note"] = (
            f"the folder holds {len(series)} DICOM series; read the largest ({len(series[chosen])} files, {chosen})"
        )
    info = ImageInfo(
        path=folder,
        format="dicom",
        dicom_modality=_first(metadata, ("0008|0060",)),
        series_description=_first(metadata, ("0008|103e",)),
        pixel_type=image.GetPixelIDTypeAsString(),
        metadata=metadata,
    )
    return image, info


def _read_file(path: Path, fmt: str) -> tuple[sitk.Image, dict[str, str]]:
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    _check_header(path, fmt)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise InputError(_reason(path, err)) from None
    check_volume(path, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise InputError(_reason(path, err)) from None
    return image, _metadata(reader.GetMetaDataKeys(), reader.GetMetaData)


def _metadata(keys, get) -> dict[str, str]:
    # ITK shows some non-string entries as placeholder text: leave those out.
    values = {key: get(key).strip() for key in keys}
    return {key: value for key, value in values.items() if not value.startswith("[UNKNOWN")}


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


def error_line(err: Exception) -> str:
    """The last non-empty line of an exception's message (SimpleITK puts the reason there)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


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


def check_finite(path: Path, array: np.ndarray) -> None:
    """Refuse NaN or infinite voxels, saying how many."""
    if np.issubdtype(array.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        if bad:
            raise InputError(
                f"{path}: {bad} of {array.size} voxels are NaN or infinite; replace them (e.g. by the background value)"
            )


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
        _check_nifti(path)
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


def _check_nifti(path: Path) -> None:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
    except (OSError, EOFError):
        raise InputError(f"{path}: not a readable NIfTI file (truncated or corrupt)") from None
    for endian in "<>":
        if len(raw) >= 348 and struct.unpack(endian + "i", raw[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(endian + "8h", raw[40:56])
            bitpix = struct.unpack(endian + "h", raw[72:74])[0]
            pixdim = struct.unpack(endian + "8f", raw[76:108])
            offset = int(struct.unpack(endian + "f", raw[108:112])[0])
            break
        if len(raw) >= 540 and struct.unpack(endian + "i", raw[:4])[0] == 540:  # NIfTI-2
            dims = struct.unpack(endian + "8q", raw[16:80])
            bitpix = struct.unpack(endian + "h", raw[14:16])[0]
            pixdim = struct.unpack(endian + "8d", raw[104:168])
            offset = struct.unpack(endian + "q", raw[168:176])[0]
            break
    else:
        raise InputError(f"{path}: not a NIfTI file (bad header size)")
    ndim = max(1, min(int(dims[0]), 7))
    if bitpix <= 0 or min(dims[1 : ndim + 1]) < 1:
        raise InputError(f"{path}: not a readable NIfTI file (invalid sizes in the header)")
    check_spacing(path, pixdim[1 : min(ndim, 3) + 1], "spacing (pixdim)")
    expected = offset + int(np.prod(dims[1 : ndim + 1], dtype=np.int64)) * bitpix // 8
    if not _has_bytes(path, opener, expected):
        raise InputError(f"{path}: the file is truncated (its header promises {expected} bytes)")


def _has_bytes(path: Path, opener, expected: int) -> bool:
    if opener is open:
        return path.stat().st_size >= expected
    try:  # a gzip stream has no size field to trust: decompress up to the last promised byte
        with gzip.open(path, "rb") as f:
            f.seek(expected - 1)
            return len(f.read(1)) == 1
    except (OSError, EOFError):
        return False
