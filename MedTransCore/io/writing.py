"""Writing images atomically: a finished file appears under its name, or nothing does.

Every write goes to a hidden staging folder next to the destination and is moved into place with
``os.replace`` (same file system, so the move is atomic); a failing writer leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import SimpleITK as sitk

from .. import __version__
from ..errors import InputError
from .reading import error_line, format_of

SYNTHETIC_METADATA: dict[str, str] = {
    "MedTrans_Synthetic": "true",
    "MedTrans_Version": __version__,
    "MedTrans_Warning": "SYNTHETIC image computed by MedTrans; not for diagnosis",
}
# NRRD ("key:=value") and MetaImage ("key = value") keys must be plain words.
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_NIFTI_DESCRIP_CHARS = 79
_TARGET_KEYS = ("MedTrans_target_modality", "MedTrans_Target", "MedTrans_target")


def write_image(
    image: sitk.Image,
    path: str | Path,
    *,
    overwrite: bool = False,
    metadata: dict[str, str] | None = None,
    synthetic: bool = True,
) -> Path:
    """Write ``image`` as NIfTI, NRRD or MetaImage (by extension), atomically.

    Args:
        image: any SimpleITK image (written with its pixel type and geometry).
        path: destination; the extension picks the format (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``,
            ``.mhd``). Missing parent folders are created.
        overwrite: replace an existing file.
        metadata: key-value pairs stored in the file: NRRD/MetaImage fields; NIfTI keeps only its 80-character
            ``descrip`` (``metadata["descrip"]``, else ``"MedTrans SYNTHETIC <target>"`` for synthetic images).
            Metadata already on ``image`` is not written.
        synthetic: add :data:`SYNTHETIC_METADATA` (``MedTrans_Synthetic=true`` ...) so readers can tell.

    Returns:
        the path written.

    Raises:
        InputError: unknown extension, an existing file without ``overwrite``, or the writer failed.
    """
    path = Path(path).expanduser()
    fmt = format_of(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name ending in .nii.gz, .nrrd or .mha")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite to replace it")
    out = _with_metadata(image, fmt, metadata or {}, synthetic)
    with atomic_file(path) as staged:
        try:
            sitk.WriteImage(out, str(staged), useCompression=True)
        except RuntimeError as err:
            raise InputError(f"could not write {path}: {error_line(err)}") from None
    return path


def _with_metadata(image: sitk.Image, fmt: str, metadata: dict[str, str], synthetic: bool) -> sitk.Image:
    values = {**(SYNTHETIC_METADATA if synthetic else {}), **{k: str(v) for k, v in metadata.items()}}
    for key, value in values.items():
        if not _KEY.match(key) or "\n" in value:
            raise ValueError(f"metadata key {key!r} must be a plain word and its value one line")
    out = sitk.Image(image)
    out.MakeUnique()  # EraseMetaData does not copy on write: without this the caller's image would lose its keys
    for key in out.GetMetaDataKeys():
        out.EraseMetaData(key)
    if fmt == "nifti":
        target = next((values[k] for k in _TARGET_KEYS if k in values), "")
        notes = values.get("descrip") or (f"MedTrans SYNTHETIC {target}".strip() if synthetic else "")
        values = {"ITK_FileNotes": notes[:_NIFTI_DESCRIP_CHARS]} if notes else {}
    for key, value in values.items():
        out.SetMetaData(key, value)
    return out


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a staging path for ``path``; on success move what was written there into place, else remove it.

    Detached formats (``.nhdr``, ``.mhd``) write a data file beside the header: every file written in the
    staging folder is moved, the header last.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging / path.name
        for written in sorted(staging.iterdir(), key=lambda p: p.name == path.name):
            os.replace(written, path.parent / written.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_folder(folder: Path, *, overwrite: bool, replaceable: str) -> Iterator[Path]:
    """Yield an empty staging folder that becomes ``folder`` on success; remove it on failure.

    Args:
        folder: destination folder; an existing empty one is replaced.
        overwrite: replace an existing non-empty ``folder`` (only if it holds nothing but files matching
            ``replaceable``, so a wrong path never deletes unrelated data).
        replaceable: glob of the files a previous write left, e.g. ``"*.dcm"``.

    Raises:
        InputError: ``folder`` is a file, or holds files and may not (or cannot safely) be replaced.
    """
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} is a file; give a folder for the DICOM series")
    existing = list(folder.iterdir()) if folder.exists() else []
    if existing and not overwrite:
        raise InputError(f"{folder} already exists and is not empty; pass --overwrite to replace it")
    if existing and set(existing) != set(folder.glob(replaceable)):
        raise InputError(
            f"{folder} holds files other than {replaceable}; refusing to replace it, choose another folder"
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    trash = staging.with_suffix(".old")
    try:
        yield staging
        if folder.exists():
            os.replace(folder, trash)
        try:
            os.replace(staging, folder)
        except OSError:
            if trash.exists():
                os.replace(trash, folder)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)
