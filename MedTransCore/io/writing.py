"""Writing images and text outputs atomically: a finished file appears under its name, or nothing does.

Every write goes to a hidden staging folder next to the destination (:class:`StagedOutputs`) and is moved into place
with ``os.replace``; a failing writer leaves nothing behind. Several outputs of one run share one
:class:`StagedOutputs` so they appear together. SimpleITK's NIfTI writer does not report a short write (a full
disk): it prints to file descriptor 2 and returns, so NIfTI files are checked against their expected length.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import SimpleITK as sitk

from .. import __version__
from ..errors import InputError, OutputError
from .files import output_files
from .reading import SUPPORTED_EXTENSIONS, error_line, format_of
from .staging import StagedOutputs, staged

SYNTHETIC_METADATA: dict[str, str] = {
    "MedTrans_Synthetic": "true",
    "MedTrans_Version": __version__,
    "MedTrans_Warning": "SYNTHETIC image computed by MedTrans; not for diagnosis",
}
# NRRD ("key:=value") and MetaImage ("key = value") keys must be plain words.
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_NIFTI_DESCRIP_CHARS = 79
_TARGET_KEYS = ("MedTrans_target_modality", "MedTrans_Target", "MedTrans_target")
# Below this much free space a failed write is reported as a full disk.
_FULL_DISK_BYTES = 1 << 20


def output_format(path: str | Path) -> str:
    """The format of an output file name (``nifti``, ``nrrd``, ``mha``), refusing unknown and upper-case extensions.

    Upper case is refused because SimpleITK cannot write it faithfully (measured with 2.5): ``.NII.GZ`` and
    ``.NII`` fail ("Bad Nifti file name"), ``.MHA`` and ``.MHD`` are written as ``.mhd`` + ``.zraw`` under another
    name, and ``.NHDR`` becomes a single attached file.
    """
    fmt = format_of(path)
    name = Path(path).name
    if not name.endswith(SUPPORTED_EXTENSIONS):
        ext = next(e for e in SUPPORTED_EXTENSIONS if name.lower().endswith(e))
        raise InputError(f"{path}: write the extension in lower case ({ext}); SimpleITK mishandles upper case")
    return fmt


def write_image(
    image: sitk.Image,
    path: str | Path,
    *,
    overwrite: bool = False,
    metadata: dict[str, str] | None = None,
    synthetic: bool = True,
    outputs: StagedOutputs | None = None,
) -> Path:
    """Write ``image`` as NIfTI, NRRD or MetaImage (by extension), atomically.

    Args:
        image: any SimpleITK image (written with its pixel type and geometry).
        path: destination; the extension picks the format (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``,
            ``.mhd``, lower case). Missing parent folders are created. ``.nhdr`` and ``.mhd`` also write a data
            file beside it (``.raw.gz``, ``.zraw``).
        overwrite: replace existing files.
        metadata: key-value pairs stored in the file: NRRD/MetaImage fields; NIfTI keeps only its 80-character
            ``descrip`` (``metadata["descrip"]``, else ``"MedTrans SYNTHETIC <target>"`` for synthetic images).
            Metadata already on ``image`` is not written.
        synthetic: add :data:`SYNTHETIC_METADATA` (``MedTrans_Synthetic=true`` ...) so readers can tell.
        outputs: stage the file with the other outputs of a run (they are committed together by their owner);
            by default the file is moved into place before this returns.

    Returns:
        the path written.

    Raises:
        InputError: unknown or upper-case extension, or an existing file without ``overwrite``.
        OutputError: the writer failed (e.g. a full disk); nothing is left behind.
    """
    path = Path(path).expanduser()
    fmt = output_format(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name ending in .nii.gz, .nrrd or .mha")
    existing = [f for f in output_files(path) if f.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} already exists; pass --overwrite to replace it")
    out = _with_metadata(image, fmt, metadata or {}, synthetic)
    *companions, _ = output_files(path)
    with staged(outputs) as staging:
        _write_checked(out, staging.file(path, companions=companions), path)
    return path


def write_text(path: str | Path, text: str, *, overwrite: bool = False, outputs: StagedOutputs | None = None) -> Path:
    """Write a UTF-8 text file (JSON, CSV) atomically, refusing an existing file unless ``overwrite``.

    Args:
        path: destination (missing folders are created).
        text: the whole content.
        overwrite: replace an existing file.
        outputs: stage it with the other outputs of a run (committed together by their owner).

    Raises:
        InputError: ``path`` is a folder, or exists without ``overwrite``.
        OutputError: the write failed (nothing is left behind).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite to replace it")
    with staged(outputs) as staging:
        target = staging.file(path)
        try:
            target.write_text(text, encoding="utf-8")
        except OSError as err:
            raise OutputError(
                f"could not write {path}: {failure_reason(target.parent, err.strerror or str(err))}"
            ) from None
    return path


def failure_reason(folder: Path, reason: str) -> str:
    """``reason`` for a failed write, saying so when the disk is full (writers often report that obscurely)."""
    try:
        stat = os.statvfs(folder)
    except (OSError, AttributeError):
        return reason
    free = stat.f_bavail * stat.f_frsize
    return f"no space left on the device ({free // 1024} KiB free; {reason})" if free < _FULL_DISK_BYTES else reason


def check_image_file(path: Path, image: sitk.Image, shown: Path | None = None) -> None:
    """Refuse an incomplete image file: SimpleITK's NIfTI writer returns normally after a short write (a full disk).

    Args:
        path: the file just written.
        image: what was written to it.
        shown: the name to give in the error (default ``path``).

    Raises:
        OutputError: the file is shorter than its header plus the voxels.
    """
    problem = _nifti_problem(path, image) if format_of(path) == "nifti" else None
    if problem is not None:
        raise OutputError(f"could not write {shown or path}: {failure_reason(path.parent, problem)}")


def _write_checked(image: sitk.Image, staged_path: Path, path: Path) -> None:
    """Write ``image`` to ``staged_path``, raising ``OutputError`` (naming ``path``) when the file is not complete."""
    with native_stderr() as printed:
        try:
            sitk.WriteImage(image, str(staged_path), useCompression=True)
        except RuntimeError as err:
            raise OutputError(
                f"could not write {path}: {failure_reason(staged_path.parent, error_line(err))}"
            ) from None
        check_image_file(staged_path, image, shown=path)
    for line in printed:  # warnings of a successful write are passed on
        print(line, file=sys.stderr)


def _nifti_problem(path: Path, image: sitk.Image) -> str | None:
    """Why the NIfTI file at ``path`` is shorter than header plus voxels, or ``None`` when it is complete."""
    data = image.GetNumberOfPixels() * image.GetNumberOfComponentsPerPixel() * image.GetSizeOfPixelComponent()
    compressed = path.name.endswith(".gz")
    try:
        with (gzip.open if compressed else open)(path, "rb") as f:
            offset = _nifti_data_offset(f.read(540))
        if offset is None:
            return "the file is incomplete (no NIfTI header)"
        expected = offset + data
        if compressed:  # the gzip trailer ends with the uncompressed length (mod 2**32); a cut file lacks it
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                complete = int.from_bytes(f.read(4), "little") == expected % 2**32
        else:
            complete = path.stat().st_size >= expected
    except (OSError, EOFError):
        return "the file is incomplete"
    return None if complete else "the file is incomplete"


def _nifti_data_offset(header: bytes) -> int | None:
    """``vox_offset`` of a NIfTI-1 or NIfTI-2 header (either byte order), or ``None``."""
    for order in "<>":
        if len(header) >= 112 and struct.unpack(order + "i", header[:4])[0] == 348:
            return int(struct.unpack(order + "f", header[108:112])[0])
        if len(header) >= 176 and struct.unpack(order + "i", header[:4])[0] == 540:
            return int(struct.unpack(order + "q", header[168:176])[0])
    return None


@contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Collect what native code prints on file descriptor 2 meanwhile (the NIfTI writer reports short writes there),
    so a failed write is one error line rather than the library's words plus ours."""
    lines: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        saved = None
    if saved is None:
        yield lines
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(line for line in capture.read().decode("utf-8", "replace").splitlines() if line.strip())


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
def atomic_folder(folder: Path, *, overwrite: bool, replaceable: str) -> Iterator[Path]:
    """Yield an empty staging folder that becomes ``folder`` on success; remove it on failure.

    Args:
        folder: destination folder; an existing empty one is replaced.
        overwrite: replace an existing non-empty ``folder`` (only if it holds nothing but files matching
            ``replaceable``, so a wrong path never deletes unrelated data).
        replaceable: glob of the files a previous write left, e.g. ``"*.dcm"``.

    Raises:
        OutputError: ``folder`` is a file, or holds files and may not (or cannot safely) be replaced.
    """
    with StagedOutputs() as outputs:
        yield outputs.folder(folder, overwrite=overwrite, replaceable=replaceable)
