"""Which files an image path stands for, and where a path really leads.

Detached formats keep the voxels beside the header. Writing ``name.nhdr`` makes SimpleITK write ``name.raw.gz``
too, and ``name.mhd`` makes ``name.zraw`` (compressed, as :func:`MedTransCore.io.write_image` always writes;
measured with SimpleITK 2.5). A header that is read may point at any data file. Output checks compare these sets,
so an output never replaces an input's data file.
"""

from __future__ import annotations

import os
from pathlib import Path

# Data file SimpleITK writes beside a detached header (lower-case extensions only: see ``output_format``).
DETACHED_DATA: dict[str, str] = {".nhdr": ".raw.gz", ".mhd": ".zraw"}
# Headers are text before the voxels; anything longer than this is not a header worth parsing.
_HEADER_BYTES = 1 << 16
# A data file pattern (``name%03d.raw 1 200 1``) is expanded up to this many files.
_MAX_PATTERN_FILES = 100_000


def real_path(path: str | Path) -> Path:
    """``path`` made absolute, with symbolic links resolved where they exist and ``..`` applied where they do not.

    This is where a write will land once missing folders are created: ``x/../in.nii.gz`` with ``x`` missing is
    ``in.nii.gz``. Existence is not required.
    """
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def lexical_path(path: str | Path) -> Path:
    """``path`` made absolute with ``..`` removed by the text alone (``x/../a`` is ``a`` even if ``x`` is a link)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def destination(path: str | Path) -> Path:
    """Where a write to ``path`` lands: the real folder plus the name (a symbolic link as the last part is replaced,
    not followed, as ``os.replace`` does)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    if path.name in ("", ".", ".."):
        return real_path(path)
    return real_path(path.parent) / path.name


def output_files(path: str | Path) -> list[Path]:
    """Every file written for image ``path``: a detached header's data file first, then ``path`` itself."""
    path = Path(path)
    for ext, data in DETACHED_DATA.items():
        if path.name.endswith(ext):
            return [path.with_name(path.name[: -len(ext)] + data), path]
    return [path]


def input_files(path: str | Path) -> list[Path]:
    """The real paths a read of ``path`` uses: the file and any data files its NRRD/MetaImage header names.

    A folder (a DICOM series) is returned as the folder itself; callers treat everything inside it as read.
    """
    path = real_path(path)
    if not path.is_file():
        return [path]
    return [path, *(real_path(path.parent / name) for name in _data_file_names(path))]


def is_inside(path: Path, folder: Path) -> bool:
    """Whether real path ``path`` is ``folder`` or lies under it."""
    return path == folder or folder in path.parents


def _data_file_names(header: Path) -> list[str]:
    """Names of the detached data files a NRRD (``data file:``) or MetaImage (``ElementDataFile =``) header gives."""
    name = header.name.lower()
    if not name.endswith((".nhdr", ".nrrd", ".mhd", ".mha")):
        return []
    try:
        with open(header, "rb") as f:
            head = f.read(_HEADER_BYTES)
    except OSError:
        return []
    lines = head.decode("latin-1").splitlines()
    nrrd = name.endswith((".nhdr", ".nrrd"))
    for index, line in enumerate(lines):
        if nrrd and not line.strip():
            break  # the NRRD header ends at the first empty line; the voxels follow
        key, sep, value = line.partition(":" if nrrd else "=")
        key = key.strip().lower().replace(" ", "")
        if sep and key == ("datafile" if nrrd else "elementdatafile"):
            return _expand(value.strip(), lines[index + 1 :])
    return []


def _expand(value: str, rest: list[str]) -> list[str]:
    """A header's data file value as file names: one name, ``LIST`` (names on the lines after it) or a pattern."""
    if value.upper() == "LOCAL":
        return []
    if value.upper().startswith("LIST"):
        return [line.strip() for line in rest if line.strip()]
    parts = value.split()
    if "%" in value and len(parts) >= 4:
        try:
            first, last, step = int(parts[1]), int(parts[2]), int(parts[3])
            count = len(range(first, last + (1 if step > 0 else -1), step)) if step else 0
            if 0 < count <= _MAX_PATTERN_FILES:
                return [parts[0] % i for i in range(first, last + (1 if step > 0 else -1), step)]
        except (ValueError, TypeError):
            pass
    return [value]
