"""Find paired cases in the folder layouts users have, and in manifests.

Every layout becomes a list of :class:`CaseRecord` (one subject: registry key -> image file, optional mask).
Supported:

* ``synthrad``: SynthRAD 2023/2025, ``<case>/{ct,mr|cbct,mask}.{nii.gz,mha}`` (any depth, e.g. ``Task1/brain/1BA001``);
  the MR's modality is a setting (``mr_modality``, default ``MR_T1``).
* ``brats``: BraTS 2023+ ``<case>/<case>-{t1n,t1c,t2w,t2f}.nii.gz`` and the older ``<case>/<case>_{t1,t1ce,t2,flair}.nii.gz``.
* ``simple``: ``<case>/{t1,t1c,t2,flair,pd,ct,cbct}.nii.gz`` (e.g. ``/work/shared/data/brain_mr``).
* ``ixi``: per-modality folders ``IXI-T1/IXI002-Guys-0828-T1.nii.gz``, ``IXI-T2/...``, ``IXI-PD/...``.
* ``flat``: every image file directly in the folder is one case of one modality (``flat_modality``, default ``CT``),
  case id = file name without its suffix; unpaired, so only named explicitly (e.g. CTs whose CBCT is simulated,
  ``data.cbct_simulation``), never by ``auto``.
* a manifest (CSV or JSON): one row per case with a ``case`` column, modality-key columns (``CT``, ``MR_T1``, ...)
  holding paths (relative to the manifest), optional ``mask`` and ``split`` (``train``/``val``/``test``) columns.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from MedTransCore.errors import InputError
from MedTransCore.modalities import MODALITIES, get_modality

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
SYNTHRAD_NAMES = {"ct": "CT", "cbct": "CBCT"}
SIMPLE_NAMES = {
    "t1": "MR_T1",
    "t1c": "MR_T1C",
    "t2": "MR_T2",
    "flair": "MR_FLAIR",
    "pd": "MR_PD",
    "ct": "CT",
    "cbct": "CBCT",
}
BRATS_SUFFIXES = {
    "t1n": "MR_T1",
    "t1c": "MR_T1C",
    "t2w": "MR_T2",
    "t2f": "MR_FLAIR",
    "t1": "MR_T1",
    "t1ce": "MR_T1C",
    "t2": "MR_T2",
    "flair": "MR_FLAIR",
}
IXI_FOLDERS = {"IXI-T1": "MR_T1", "IXI-T2": "MR_T2", "IXI-PD": "MR_PD"}
LAYOUTS = ("auto", "synthrad", "brats", "simple", "ixi", "flat")


@dataclass
class CaseRecord:
    """One subject's co-registered images.

    Attributes:
        case: case identifier.
        images: registry key -> image path.
        mask: body/field-of-view mask path, if the layout has one.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None`` (decided by the data config).
    """

    case: str
    images: dict[str, Path] = field(default_factory=dict)
    mask: Path | None = None
    split: str | None = None


def _stem(path: Path) -> str | None:
    """File name without an image suffix, or None when it is not an image."""
    for suffix in IMAGE_SUFFIXES:
        if path.name.lower().endswith(suffix):
            return path.name[: -len(suffix)]
    return None


def _images_in(folder: Path) -> dict[str, Path]:
    return {stem: p for p in sorted(folder.iterdir()) if p.is_file() and (stem := _stem(p)) is not None}


def discover_synthrad(root: Path, mr_modality: str = "MR_T1") -> list[CaseRecord]:
    cases = []
    for folder in sorted({p.parent for p in root.rglob("*") if p.is_file() and _stem(p) == "ct"}):
        files = _images_in(folder)
        images = {SYNTHRAD_NAMES[k]: v for k, v in files.items() if k in SYNTHRAD_NAMES}
        if "mr" in files:
            images[mr_modality] = files["mr"]
        if len(images) >= 2:
            cases.append(CaseRecord(folder.name, images, files.get("mask")))
    return cases


def discover_brats(root: Path) -> list[CaseRecord]:
    cases = []
    for folder in sorted(p for p in root.rglob("*") if p.is_dir()):
        images = {}
        for stem, path in _images_in(folder).items():
            match = re.fullmatch(re.escape(folder.name) + r"[-_]([a-z0-9]+)", stem)
            if match and match.group(1) in BRATS_SUFFIXES:
                images[BRATS_SUFFIXES[match.group(1)]] = path
        if len(images) >= 2:
            cases.append(CaseRecord(folder.name, images))
    return cases


def discover_simple(root: Path) -> list[CaseRecord]:
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = _images_in(folder)
        images = {SIMPLE_NAMES[k.lower()]: v for k, v in files.items() if k.lower() in SIMPLE_NAMES}
        if len(images) >= 2:
            cases.append(CaseRecord(folder.name, images, files.get("mask")))
    return cases


def discover_ixi(root: Path) -> list[CaseRecord]:
    by_case: dict[str, CaseRecord] = {}
    for folder_name, key in IXI_FOLDERS.items():
        folder = root / folder_name
        if not folder.is_dir():
            continue
        suffix = "-" + folder_name.split("-", 1)[1]
        for stem, path in _images_in(folder).items():
            if stem.endswith(suffix):
                case = stem[: -len(suffix)]
                by_case.setdefault(case, CaseRecord(case)).images[key] = path
    return [by_case[c] for c in sorted(by_case) if len(by_case[c].images) >= 2]


def discover_flat(root: Path, modality: str = "CT") -> list[CaseRecord]:
    get_modality(modality)
    return [CaseRecord(stem, {modality: path}) for stem, path in _images_in(root).items()]


def read_manifest(path: str | Path) -> list[CaseRecord]:
    """Cases from a CSV or JSON manifest (a list of row objects, or ``{"cases": [...]}``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist")
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text())
        rows = rows["cases"] if isinstance(rows, dict) else rows
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    cases = []
    for number, row in enumerate(rows, start=1):
        if not row.get("case"):
            raise InputError(f"{path}: row {number} has no 'case' value")
        unknown = set(row) - set(MODALITIES) - {"case", "mask", "split"}
        if unknown:
            raise InputError(f"{path}: unknown column(s) {', '.join(sorted(unknown))}; use modality keys, mask, split")
        images = {k: (path.parent / row[k]).resolve() for k in MODALITIES if row.get(k)}
        missing = [str(p) for p in images.values() if not p.is_file()]
        if missing:
            raise InputError(f"{path}: case {row['case']!r} lists missing file(s): {', '.join(missing)}")
        mask = (path.parent / row["mask"]).resolve() if row.get("mask") else None
        cases.append(CaseRecord(str(row["case"]), images, mask, row.get("split") or None))
    return cases


def discover_cases(
    root: str | Path, layout: str = "auto", mr_modality: str = "MR_T1", flat_modality: str = "CT"
) -> list[CaseRecord]:
    """Cases under ``root`` in one of :data:`LAYOUTS` (``auto`` tries ixi, brats, synthrad, simple in turn).

    Args:
        root: the data folder.
        layout: one of :data:`LAYOUTS`.
        mr_modality: what SynthRAD's ``mr.*`` is.
        flat_modality: the modality of every file of the ``flat`` layout.

    Raises:
        InputError: no folder, unknown layout, or no case (with two or more modalities, except ``flat``).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"data folder {root} does not exist")
    finders = {
        "ixi": discover_ixi,
        "brats": discover_brats,
        "synthrad": lambda r: discover_synthrad(r, mr_modality),
        "simple": discover_simple,
        "flat": lambda r: discover_flat(r, flat_modality),
    }
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    for name in [n for n in finders if n != "flat"] if layout == "auto" else [layout]:
        cases = finders[name](root)
        if cases:
            return cases
    what = "image files" if layout == "flat" else "paired cases"
    raise InputError(f"no {what} found in {root} (layout {layout}); see medtrans_training.data.layouts")
