"""Output planning for the CLI: every file a command will write, checked before any work is done.

A command lists its outputs (:func:`synthetic_output`, :func:`image_output`, :func:`file_output`) and its inputs,
and :func:`plan_outputs` refuses, up front, anything that would lose data or fail late: an output that is (or
reaches, e.g. through ``x/../in.nii.gz``) an input or an input's data file, one inside an input DICOM folder, two
outputs writing one file, an existing file without ``--overwrite``, a parent that is a file or read-only, and names
too long for the file system. Paths are compared after resolving them (symbolic links where they exist, ``..``
lexically where they do not), and detached formats count with their data files. The checked outputs are then
written through one :class:`~MedTransCore.io.staging.StagedOutputs`, so they appear together or not at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from ..io import SUPPORTED_EXTENSIONS, write_dicom_series, write_image
from ..io.files import destination, input_files, is_inside, lexical_path, output_files
from ..io.staging import StagedOutputs
from ..io.writing import output_format
from ..modalities import get_modality

# POSIX's usual NAME_MAX, for file systems that do not say.
DEFAULT_NAME_MAX = 255


@dataclass
class Output:
    """One file or folder a command writes.

    Attributes:
        path: as the user gave it (``~`` expanded); messages name it so.
        kind: ``"image"`` (NIfTI/NRRD/MetaImage file), ``"dicom"`` (a folder for a DICOM series) or ``"file"``.
        option: what named it, e.g. ``"--output"``.
        replaceable: an existing file may be replaced without ``--overwrite`` (a command's own bookkeeping).
        target: where it is written (the real folder plus the name), set by :func:`plan_outputs`.
    """

    path: Path
    kind: str
    option: str
    replaceable: bool = False
    target: Path | None = None

    @property
    def files(self) -> list[Path]:
        """Every path written: a detached header's data file, then the output itself."""
        return self.files_at(self.target or destination(self.path))

    def files_at(self, where: Path) -> list[Path]:
        """The paths this output writes when it is written at ``where``."""
        return output_files(where) if self.kind == "image" else [where]


def is_image_file(path: Path) -> bool:
    return any(str(path).lower().endswith(ext) for ext in SUPPORTED_EXTENSIONS)


def image_output(path: Path, option: str) -> Output:
    """An image file output; its extension (lower case) picks the format."""
    path = Path(path).expanduser()
    output_format(path)
    return Output(path, "image", option)


def file_output(path: Path, option: str, *, replaceable: bool = False) -> Output:
    """A text output (JSON, CSV) of any name; ``replaceable``: may replace an existing file without ``--overwrite``."""
    return Output(Path(path).expanduser(), "file", option, replaceable)


def synthetic_output(path: Path, target_modality: str, option: str = "--output") -> Output:
    """A synthetic volume: an image file by extension, or a DICOM series folder for a CT-like target."""
    path = Path(path).expanduser()
    if is_image_file(path):
        return image_output(path, option)
    if path.suffix:
        raise InputError(
            f"{option} {path}: unknown output extension {path.suffix!r}; use one of "
            f"{', '.join(SUPPORTED_EXTENSIONS)}, or a folder name without extension for a DICOM series"
        )
    if not get_modality(target_modality).is_ct:
        raise InputError("a DICOM series is written only for CT-like targets; give an image file name for MR")
    return Output(path, "dicom", option)


def plan_outputs(outputs: Sequence[Output], inputs: Iterable[Path | None], *, overwrite: bool) -> list[Output]:
    """Check every output of a run before any work is done; sets each ``target``.

    Args:
        outputs: what the run writes.
        inputs: what it reads (``None`` entries are skipped): files, detached headers (their data files count) or
            DICOM folders (everything inside counts).
        overwrite: existing outputs may be replaced (an output with ``replaceable`` set may be anyway).

    Returns:
        ``outputs``, each with its ``target``.

    Raises:
        InputError: naming the first output that may not be written, and why.
    """
    read = _Inputs([p for p in inputs if p is not None])
    written: dict[Path, Output] = {}
    folders: list[Output] = []  # DICOM outputs: nothing else may be written inside them
    for output in outputs:
        output.target = destination(output.path)
        _check_folder(output)
        # The path as written is checked too: through a link, "x/../in.nii.gz" lands elsewhere than it reads.
        for path in [*output.files, *output.files_at(lexical_path(output.path))]:
            read.check(output, path)
        for path in output.files:
            other = written.get(path) or next((f for f in folders if is_inside(path, f.target)), None)
            if other is None and output.kind == "dicom":
                other = next((o for p, o in written.items() if is_inside(p, path)), None)
            if other is not None:
                raise InputError(
                    f"{output.option} {output.path} and {other.option} {other.path} would write the same place; "
                    "give them different paths"
                )
            written[path] = output
        if output.kind == "dicom":
            folders.append(output)
        _check_existing(output, overwrite or output.replaceable)
    return list(outputs)


class _Inputs:
    """The files and folders a run reads, indexed by real path and by inode (hard links are the same file)."""

    def __init__(self, inputs: list[Path]) -> None:
        self.paths: dict[Path, tuple[Path, bool]] = {}  # real path -> (as given, is it the input itself)
        self.inodes: dict[tuple[int, int], tuple[Path, bool]] = {}
        self.folders: list[tuple[Path, Path]] = []  # (real folder, as given)
        for given in inputs:
            given = Path(given).expanduser()
            self.paths[lexical_path(given)] = (given, True)
            for index, path in enumerate(input_files(given)):
                self.paths[path] = (given, index == 0)
                if path.is_dir():
                    self.folders.append((path, given))
                elif (inode := _inode(path)) is not None:
                    self.inodes[inode] = (given, index == 0)

    def check(self, output: Output, path: Path) -> None:
        """Refuse ``path`` (written for ``output``) when it is, replaces or holds something read."""
        hit = self.paths.get(path) or ((inode := _inode(path)) is not None and self.inodes.get(inode))
        if hit:
            given, itself = hit
            what = "is the input" if itself else f"would replace {path}, a data file of the input"
            raise InputError(
                f"the output {output.path} {what} {given}; choose another path (sources are never overwritten)"
            )
        for folder, given in self.folders:
            if is_inside(path, folder):
                raise InputError(
                    f"the output {output.path} is inside the input folder {given}; choose another path "
                    "(sources are never overwritten)"
                )
        if output.kind == "dicom":
            for source, (given, _) in self.paths.items():
                if is_inside(source, path):
                    raise InputError(
                        f"the output folder {output.path} holds the input {given}; choose another path "
                        "(sources are never overwritten)"
                    )


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _check_folder(output: Output) -> None:
    """The nearest existing folder is a folder we may write in, and every new name fits the file system."""
    folder = output.target.parent
    new = [p.name for p in output.files]
    while not (folder.exists() or folder.is_symlink()):
        new.append(folder.name)
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"cannot write {output.option} {output.path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {output.option} {output.path}: the folder {folder} is read-only for you")
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = DEFAULT_NAME_MAX
    for name in new:
        if len(os.fsencode(name)) > limit:
            raise InputError(
                f"cannot write {output.option} {output.path}: the name {name[:24]}... is {len(os.fsencode(name))} "
                f"bytes long; the file system allows {limit}"
            )


def _check_existing(output: Output, overwrite: bool) -> None:
    target = output.target
    if output.kind == "dicom":
        if target.exists() and not target.is_dir():
            raise InputError(f"{output.path} is a file; give a folder for the DICOM series")
        content = list(target.iterdir()) if target.is_dir() else []
        if content and not overwrite:
            raise InputError(f"{output.path} already exists and is not empty; pass --overwrite to replace it")
        if any(not (p.is_file() and p.suffix == ".dcm") for p in content):
            raise InputError(
                f"{output.path} holds files other than *.dcm; refusing to replace it, choose another folder"
            )
        return
    for written in output.files:
        if written.is_dir():
            raise InputError(f"{output.option} {output.path} is a folder; give a file name")
        if (written.exists() or written.is_symlink()) and not overwrite:
            what = output.path if written == target else f"{written} (the data file of {output.path})"
            raise InputError(f"{what} already exists; pass --overwrite to replace it")


def synthetic_metadata(settings: dict) -> dict[str, str]:
    """Key-value metadata recorded in every synthetic file (a list, e.g. ``source_modalities``, as ``A,B,C``)."""
    meta = {"MedTrans_Synthetic": "true"}
    meta.update(
        {
            f"MedTrans_{key}": ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            for key, value in settings.items()
        }
    )
    return meta


def sources_label(settings: dict) -> str:
    """What a synthetic volume was made from: ``MR_T1`` or ``MR_T1 + MR_FLAIR`` (settings of any version)."""
    return " + ".join(settings.get("source_modalities") or [settings["source_modality"]])


def write_synthetic(
    image: sitk.Image, output: Path, settings: dict, overwrite: bool, outputs: StagedOutputs | None = None
) -> Path:
    """Write a synthetic volume: NIfTI/NRRD/MHA by extension, or a DICOM series when ``output`` is a folder.

    Args:
        image: the synthetic volume.
        output: file name, or a folder name without extension for a DICOM series (CT-like targets).
        settings: the run's settings (recorded in the file; ``target_modality`` picks what may be written).
        overwrite: replace existing outputs.
        outputs: stage it with the run's other outputs (committed together by their owner).
    """
    target = settings["target_modality"]
    planned = synthetic_output(output, target)
    if planned.kind == "image":
        meta = synthetic_metadata(settings)
        return write_image(image, output, overwrite=overwrite, metadata=meta, synthetic=True, outputs=outputs)
    description = f"SYNTHETIC {target} from {sources_label(settings)} ({settings['model']})"
    return write_dicom_series(
        image, output, modality="CT", series_description=description, overwrite=overwrite, outputs=outputs
    )
