"""Turn files sent by the browser into one validated 3D SimpleITK image.

A browser upload is untrusted: it may be no image at all, a 2D picture, a zip bomb or a volume too big for
the server. Everything here checks headers *before* reading pixels and raises ``InputError`` with a one-line
message the page shows; nothing here may take the server down.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import SimpleITK as sitk

from MedTransCore.errors import InputError
from MedTransCore.io import ImageInfo, read_image

# Suffixes read as one volume file; anything else is only accepted as part of a DICOM series.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
ACCEPTED_HINT = "upload a NIfTI (.nii, .nii.gz), NRRD (.nrrd), MetaImage (.mha) file or a zipped DICOM series"


@dataclass(frozen=True)
class UploadLimits:
    """What the server accepts from one upload.

    Args:
        max_bytes: total size of the uploaded files (and of a zip's extracted content).
        max_voxels: number of voxels of the volume.
    """

    max_bytes: int = 1024**3
    max_voxels: int = 512 * 512 * 1024

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_voxels <= 0:
            raise ValueError(f"limits must be positive, got {self}")


def volume_suffix(name: str) -> str | None:
    """The volume-file suffix of ``name`` (``.nii.gz`` counts as one), or ``None``."""
    lower = name.lower()
    return next((suffix for suffix in VOLUME_SUFFIXES if lower.endswith(suffix)), None)


def display_name(name: str) -> str:
    """A node name from a file name: the stem without any volume or zip suffix."""
    base = PurePosixPath(name).name
    suffix = volume_suffix(base) or (".zip" if base.lower().endswith(".zip") else "")
    return base[: len(base) - len(suffix)] or "volume"


def _safe_name(name: str) -> str:
    """A browser-given file name reduced to a plain file name (no folders, no ``..``)."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    if base in ("", ".", ".."):
        raise InputError(f"invalid file name {name!r}; {ACCEPTED_HINT}")
    return base


def _content(file: dict) -> bytes:
    """The bytes of one trame client file dict (``content`` may arrive as a list of chunks)."""
    content = file.get("content")
    if isinstance(content, list):
        content = b"".join(content)
    if not content:
        raise InputError(f"{file.get('name', 'the upload')!r} is empty; {ACCEPTED_HINT}")
    return bytes(content)


def _extract_zip(archive: Path, folder: Path, limits: UploadLimits) -> None:
    """Extract ``archive`` into ``folder``, refusing zip bombs and paths that leave ``folder``."""
    try:
        with zipfile.ZipFile(archive) as zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > limits.max_bytes:
                raise InputError(f"{archive.name!r} unpacks to more than {limits.max_bytes // 1024**2} MB")
            for index, member in enumerate(members):
                # Flatten to numbered names: a DICOM series reader only needs the files, and this makes
                # path traversal (``../``, absolute names) impossible.
                target = folder / f"{index:06d}_{_safe_name(member.filename)}"
                with zf.open(member) as src, open(target, "wb") as dst:
                    dst.write(src.read())
    except zipfile.BadZipFile as error:
        raise InputError(f"{archive.name!r} is not a valid zip archive; {ACCEPTED_HINT}") from error


def store_client_files(files: list[dict], folder: str | Path, limits: UploadLimits | None = None) -> Path:
    """Write the browser's files into ``folder`` and return what to read: a volume file or a DICOM folder.

    Args:
        files: trame client file dicts (``name``, ``size``, ``content``).
        folder: an empty, writable folder owned by the caller.
        limits: size limits (defaults: :class:`UploadLimits`).

    Returns:
        the single volume file, or the folder holding the DICOM files (from a zip or several uploaded files).
    """
    limits = limits or UploadLimits()
    folder = Path(folder)
    if not files:
        raise InputError(f"no file received; {ACCEPTED_HINT}")
    if sum(int(f.get("size") or 0) for f in files) > limits.max_bytes:
        raise InputError(f"the upload is larger than the server's limit of {limits.max_bytes // 1024**2} MB")
    names = [_safe_name(f.get("name", "")) for f in files]
    series = folder / "series"
    series.mkdir()
    if len(files) == 1 and (volume_suffix(names[0]) or names[0].lower().endswith(".zip")):
        path = folder / names[0]
        path.write_bytes(_content(files[0]))
        if volume_suffix(names[0]):
            return path
        _extract_zip(path, series, limits)
        volumes = [p for p in series.iterdir() if volume_suffix(p.name)]
        return volumes[0] if len(volumes) == 1 else series
    if len(files) == 1 and not _may_be_dicom(names[0]):
        raise InputError(f"{names[0]!r} is not a supported image file; {ACCEPTED_HINT}")
    for index, (name, file) in enumerate(zip(names, files, strict=True)):
        (series / f"{index:06d}_{name}").write_bytes(_content(file))
    return series


def _may_be_dicom(name: str) -> bool:
    """DICOM files are often named without a suffix (``IM0001``) or with ``.dcm``/``.ima``."""
    suffix = PurePosixPath(name).suffix.lower()
    return suffix in ("", ".dcm", ".dicom", ".ima") or suffix[1:].isdigit()


def _check_size(size: tuple[int, ...], what: str, limits: UploadLimits) -> None:
    if len(size) != 3 or min(size) < 2:
        shape = "x".join(map(str, size))
        raise InputError(
            f"{what} is a {len(size)}D image of size {shape}; MedTrans needs a 3D volume ({ACCEPTED_HINT})"
        )
    voxels = size[0] * size[1] * size[2]
    if voxels > limits.max_voxels:
        raise InputError(
            f"{what} has {voxels / 1e6:.0f} million voxels, more than this server's limit of "
            f"{limits.max_voxels / 1e6:.0f} million; crop or downsample it first"
        )


def check_volume_header(path: str | Path, limits: UploadLimits | None = None) -> tuple[int, ...]:
    """Check from headers alone that ``path`` (file or DICOM folder) is one 3D volume within ``limits``.

    Returns:
        the (x, y, z) size.
    """
    limits = limits or UploadLimits()
    path = Path(path)
    if path.is_dir():
        files = [f for f in path.iterdir() if f.is_file()]
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise InputError(f"no DICOM image found among the {len(files)} uploaded file(s); {ACCEPTED_HINT}")
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0])
        first = _header(Path(names[0]), "the DICOM series")
        size = first.GetSize()[:2] + (len(names) * (first.GetSize()[2] if first.GetDimension() == 3 else 1),)
        _check_size(tuple(size), "the DICOM series", limits)
        return tuple(size)
    header = _header(path, repr(path.name))
    size = tuple(header.GetSize())
    _check_size(size, repr(path.name), limits)
    return size


def _header(path: Path, what: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{what} could not be read as an image; {ACCEPTED_HINT}") from error
    return reader


@dataclass
class Upload:
    """A validated upload.

    Attributes:
        image: the volume, float32, with its geometry.
        name: a name for it (the file name without suffix).
        info: what the reader learnt (format, DICOM modality, description).
    """

    image: sitk.Image
    name: str
    info: ImageInfo


def read_upload(files: list[dict], folder: str | Path, limits: UploadLimits | None = None) -> Upload:
    """Store, check and read an upload.

    Args:
        files: trame client file dicts.
        folder: an empty scratch folder owned by the caller (it may be deleted afterwards).
        limits: size limits.
    """
    limits = limits or UploadLimits()
    path = store_client_files(files, folder, limits)
    check_volume_header(path, limits)
    image, info = read_image(path)
    name = display_name(files[0].get("name", "volume")) if len(files) == 1 else "DICOM series"
    return Upload(image, name, info)
