"""The batch manifest: a CSV of cases, read as UTF-8 and checked as a whole before any case runs.

Columns: ``input``, ``source_modality``, ``target_modality`` (required); ``reference``, ``mask``, ``case``
(optional); and, for several sequences in, one optional column per further source, named after its modality key
(``MR_T1``, ``MR_T1C``, ``MR_FLAIR`` ...) and holding its path. ``input`` is the first source and the reference
grid; the further sources follow in the order of their columns. A case leaves the cells of sequences it does not have
empty (it then runs with the sources it has); a further source may be neither the case's ``source_modality`` nor its
``target_modality``. Example (BraSyn: three sequences in, the missing one out)::

    case,input,source_modality,MR_T1C,MR_FLAIR,target_modality
    p01,p01/t1.nii.gz,MR_T1,p01/t1c.nii.gz,p01/flair.nii.gz,MR_T2

Every path (``input``, ``reference``, ``mask`` and the source columns) is resolved against the manifest's folder.
A byte-order mark (Excel's "CSV UTF-8") is accepted. Case names become folders under ``--out``, so they must be
plain, unique folder names: a name such as ``../escaped`` or ``/tmp/x`` would write outside ``--out``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import InputError
from ..modalities import MODALITIES

REQUIRED_COLUMNS = ("input", "source_modality", "target_modality")
OPTIONAL_COLUMNS = ("reference", "mask", "case")
PATH_COLUMNS = ("input", "reference", "mask")
# Files the batch keeps in ``--out`` itself; no case folder may take their names.
RESERVED_NAMES = ("status.json", "summary.csv")
# At most this many problems are named in the one error line.
_SHOWN = 5


def extra_sources(row: dict[str, str]) -> list[tuple[str, str]]:
    """``[(modality, path), ...]`` of a row's further sources (its non-empty modality columns, in column order)."""
    return [(key, value) for key, value in row.items() if key in MODALITIES and value]


def row_paths(row: dict[str, str]) -> list[Path]:
    """Every file or folder a case reads: input, reference, mask and its further sources."""
    return [Path(row[k]) for k in PATH_COLUMNS if row.get(k)] + [Path(p) for _, p in extra_sources(row)]


def read_manifest(path: Path) -> list[dict[str, str]]:
    """Rows of the manifest, checked, with relative paths resolved against the manifest's folder.

    Every row gets a ``case`` (its own, or ``<row index>_<input name>``) and ``line``, its line in the file.

    Raises:
        InputError: a missing or non-UTF-8 file, missing columns, no rows, or rows with a missing input, an unknown
            modality, a further source (modality column) that is the row's source or target modality, or a case
            name that is not a plain, unique folder name (the error names their lines).
    """
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist")
    rows = _read_rows(path)
    problems = []
    for index, row in enumerate(rows):
        where = f"line {row['line']}"
        if not row.get("input"):
            problems.append(f"{where}: no input")
        for key in ("source_modality", "target_modality"):
            if row.get(key) not in MODALITIES:
                problems.append(f"{where}: unknown {key} {row.get(key)!r} (choose from {', '.join(MODALITIES)})")
        for key, _ in extra_sources(row):
            for role in ("source_modality", "target_modality"):
                if row.get(role) == key:
                    problems.append(f"{where}: column {key} is also the {role}; a further source must be another one")
        for key in [*PATH_COLUMNS, *(k for k, _ in extra_sources(row))]:
            if row.get(key):
                p = Path(row[key]).expanduser()
                row[key] = str(p if p.is_absolute() else path.parent / p)
        row["case"] = row.get("case") or f"{index:04d}_{Path(row.get('input', '')).name.split('.')[0]}"
        if (why := _bad_case_name(row["case"])) is not None:
            problems.append(f"{where}: case name {row['case']!r} {why}")
    lines: dict[str, list[str]] = {}
    for row in rows:
        lines.setdefault(row["case"], []).append(row["line"])
    problems += [
        f"case {case!r} is on lines {', '.join(at)} (case names must be unique: they name the output folders)"
        for case, at in lines.items()
        if len(at) > 1
    ]
    if problems:
        more = f" (and {len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""
        raise InputError(f"manifest {path}: {'; '.join(problems[:_SHOWN])}{more}")
    return rows


def _read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(f"manifest {path} lacks the column(s) {', '.join(missing)}")
            rows = []
            for row in reader:
                # Cells are trimmed ("CT, CBCT" in a spreadsheet); surplus cells (key None) are dropped.
                cells = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
                rows.append({**cells, "line": str(reader.line_num)})
    except UnicodeDecodeError as err:
        raise InputError(
            f"manifest {path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8 (e.g. Excel's 'CSV UTF-8')"
        ) from None
    except csv.Error as err:
        raise InputError(f"manifest {path} is not a readable CSV file: {err}") from None
    if not rows:
        raise InputError(f"manifest {path} has no cases")
    return rows


def _bad_case_name(name: str) -> str | None:
    """Why ``name`` cannot be a case folder directly under ``--out``, or ``None``."""
    if name in ("", ".", ".."):
        return "is not a folder name"
    if any(sep in name for sep in {"/", "\\", os.sep, os.altsep or "/"}) or "\0" in name:
        return "has a path separator; it must be a plain folder name inside --out"
    if name in RESERVED_NAMES:
        return "is a file the batch keeps in --out"
    if len(os.fsencode(name)) > 255:
        return "is longer than 255 bytes"
    return None
