"""Training data from the ``data`` section of a run config.

Keys (``x, y, z`` order for ``spacing`` and ``patch``, as in bundle metadata)::

    data:
      modalities: [CT, MR_T1]      # run order = one-hot index = bundle "modalities"
      pairs: all                   # or [[MR_T1, CT], ...]
      spacing: [3, 3, 3]           # model spacing in mm (bundle "spacing")
      patch: [64, 64, 64]          # random crop = model grid (bundle "grid")
      source: phantom | folder | manifest
      phantom: {anatomy: head, shape: [64, 64, 64], train_seeds: [0, 32], val_seeds: [1000, 1004],
                test_seeds: [2000, 2003]}   # default test seeds: 2000 up, as many as the validation seeds
      root: /data/brats            # source: folder
      layout: auto                 # auto | synthrad | brats | simple | ixi | flat
      mr_modality: MR_T1           # what SynthRAD's mr.* is
      flat_modality: CT            # layout: flat: every image file in root is one case of this modality
      manifest: cases.csv          # source: manifest (a split column train/val/test is honoured)
      val_cases: [TCGA-DU-7294]    # or val_fraction: 0.2 (the last cases by sorted id before the test ones)
      test_cases: [IXI002]         # or test_fraction: 0.2 (the last cases by sorted id); never trained on
      augment: true                # or overrides of dataset.AUGMENT_DEFAULTS
      all_targets: false           # also yield every modality of the case ("targets", "available")
      standardise: histogram-matching   # optional: histogram-match each source onto its target's reference
                                   # quantiles in that histogram_matching bundle (unet input_standardisation)
      repeats: 8                   # visits per case per epoch (val_repeats: 4 for the validation patches)
      sampling: patches            # or slices: axial slice stacks (data.slices), patch = [x, y] in-plane
      context: 1                   # sampling: slices: neighbouring slices on each side
      normalisation: brain_percentiles   # MR scheme (MedTransCore.modalities.MR_SCHEMES; recorded in the bundle)
      intensity_window: {CT: [-200, 200], CT_ARTERIAL: [-200, 600]}   # HU window per CT-like modality: [low, high]
                                   # -> [-1, 1], clipped (MedTransCore.intensity_window: every modality of a pair
                                   # windowed or none, no MR; recorded in the bundle's normalisation)
      balance: pairs               # sampling: slices: visits per case ∝ its ordered sequence pairs (default: cases)
      cbct_simulation: {views: 200, seed: 0, cache: runs/cbct-cache}   # every case's CBCT simulated from its CT
                                   # (MedTransCore.phantoms.cone_beam.ConeBeamSettings fields; seed: per case from
                                   # this and the case id; cache: relative to the current directory; see cbct_cache)
      extra_sources:               # more cases in the same run, e.g. phantoms next to real CTs:
        - {source: phantom, phantom: {anatomy: pelvis, train_seeds: [0, 8], val_seeds: [1000, 1001]}}
                                   # each entry has its own source keys (source ... test_fraction); it takes
                                   # modalities and spacing from data, and cbct_simulation unless it sets one
                                   # (null: off); case ids must differ between sources
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import yaml

from MedTransCore.errors import InputError
from MedTransCore.intensity_window import FIELD as INTENSITY_WINDOW
from MedTransCore.intensity_window import Window, check_window_pairs, parse_windows
from MedTransCore.modalities import MR_SCHEMES

from .cbct_cache import SimulatedCBCTLoader, inner_modalities, simulation_loaders
from .dataset import paired_patch_dataset, resolve_pairs
from .layouts import CaseRecord, discover_cases, read_manifest
from .slices import slice_stack_dataset

__all__ = [
    "CaseLoader",
    "PhantomLoader",
    "SimulatedCBCTLoader",
    "build_datasets",
    "case_loaders",
    "cases_from_spec",
    "intensity_windows",
    "resolve_pairs",
    "standardisation_reference",
]


@dataclass
class CaseLoader:
    """Reads one case's files (through ``MedTransCore.io`` like every front end)."""

    record: CaseRecord
    modalities: tuple[str, ...]

    def __call__(self) -> tuple[dict[str, sitk.Image], sitk.Image | None]:
        from MedTransCore.io import read_image, read_mask

        images = {k: read_image(p)[0] for k, p in self.record.images.items() if k in self.modalities}
        mask = read_mask(self.record.mask) if self.record.mask else None
        return images, mask


@dataclass
class PhantomLoader:
    """Simulates one case with ``MedTransCore.phantoms.generate_phantom`` (deterministic per seed)."""

    anatomy: str
    seed: int
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    modalities: tuple[str, ...]

    def __call__(self) -> tuple[dict[str, sitk.Image], sitk.Image | None]:
        from MedTransCore.phantoms import generate_phantom

        case = generate_phantom(
            anatomy=self.anatomy,
            seed=self.seed,
            shape=self.shape,
            spacing=self.spacing,
            modalities=list(self.modalities),
        )
        # No mask: the training mask is MedTransCore's body mask, the one inference uses.
        return {k: case.images[k] for k in self.modalities}, None


def _phantom_loaders(data: dict[str, Any], split: str) -> list[tuple[str, PhantomLoader]]:
    phantom = data.get("phantom", {})
    anatomies = phantom.get("anatomy", "head")
    anatomies = [anatomies] if isinstance(anatomies, str) else list(anatomies)
    val_start, val_stop = phantom.get("val_seeds", [1000, 1002])
    default = {"train": [0, 16], "val": [1000, 1002], "test": [2000, 2000 + max(val_stop - val_start, 1)]}[split]
    start, stop = phantom.get(f"{split}_seeds", default)
    shape = tuple(phantom.get("shape", [64, 64, 64]))
    spacing = tuple(phantom.get("spacing", data.get("spacing") or [3.0, 3.0, 3.0]))
    modalities = tuple(data["modalities"])
    return [
        (f"phantom-{anatomy}-{seed:04d}", PhantomLoader(anatomy, seed, shape, spacing, modalities))
        for seed in range(start, stop)
        for anatomy in anatomies
    ]


def _split_records(data: dict[str, Any], records: list[CaseRecord]) -> None:
    """Mark each record train, val or test (manifest splits win, then val_cases/test_cases, then the fractions:
    test takes the last cases by sorted id, val the ones just before them)."""
    names = {r.case for r in records}
    listed = {split: set(data.get(f"{split}_cases", [])) for split in ("val", "test")}
    for split, cases in listed.items():
        if cases - names:
            raise InputError(f"data.{split}_cases not found: {', '.join(sorted(cases - names))}")
    if listed["val"] & listed["test"]:
        both = ", ".join(sorted(listed["val"] & listed["test"]))
        raise InputError(f"{both} cannot be both a validation and a test case (data.val_cases, data.test_cases)")
    ordered = [r.case for r in sorted(records, key=lambda r: r.case) if r.split is None and r.case not in listed["val"]]
    for split in ("test", "val"):
        if not listed[split]:
            count = math.ceil(float(data.get(f"{split}_fraction", 0.0)) * len(records))
            chosen = ordered[len(ordered) - count :] if count else []
            listed[split] = set(chosen)
            ordered = [case for case in ordered if case not in listed[split]]
    for record in records:
        if record.split is None:
            record.split = next((s for s in ("val", "test") if record.case in listed[s]), "train")


def case_loaders(data: dict[str, Any], split: str) -> list[tuple[str, Any]]:
    """``(case id, loader)`` of one split (``"train"``, ``"val"`` or ``"test"``); a loader returns ``(images, mask)``.

    The cases of ``data`` come first, then those of each ``data.extra_sources`` entry (with the run's
    ``modalities`` and ``spacing``, and its ``cbct_simulation`` unless the entry sets one); with ``cbct_simulation``
    a source's CBCT is simulated from its CT.

    Raises:
        InputError: a bad source, or one case id in two sources.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    run = {"modalities": data["modalities"], "spacing": data.get("spacing")}
    extras = [
        {"cbct_simulation": data.get("cbct_simulation"), **extra, **run} for extra in data.get("extra_sources") or []
    ]
    sources = [data, *extras]
    loaders = [pair for source in sources for pair in _source_loaders(source, split)]
    repeated = sorted(case for case, count in Counter(case for case, _ in loaders).items() if count > 1)
    if repeated:
        raise InputError(f"case id(s) {', '.join(repeated)} come from two data sources (data.extra_sources)")
    return loaders


def _source_loaders(data: dict[str, Any], split: str) -> list[tuple[str, Any]]:
    """The cases of one source, their CBCT simulated from their CT when it has ``cbct_simulation``."""
    simulation = data.get("cbct_simulation")
    if not simulation:
        return _plain_loaders(data, split)
    modalities = tuple(data["modalities"])
    if "CBCT" not in modalities:
        raise InputError("data.cbct_simulation makes CBCT images: data.modalities must list CBCT")
    inner = _plain_loaders({**data, "modalities": list(inner_modalities(modalities))}, split)
    return simulation_loaders(inner, modalities, simulation)


def _plain_loaders(data: dict[str, Any], split: str) -> list[tuple[str, Any]]:
    source = data.get("source", "phantom")
    if source == "phantom":
        return _phantom_loaders(data, split)
    if source == "folder":
        records = discover_cases(
            data["root"], data.get("layout", "auto"), data.get("mr_modality", "MR_T1"), data.get("flat_modality", "CT")
        )
    elif source == "manifest":
        records = read_manifest(data["manifest"])
    else:
        raise InputError(f"data.source must be phantom, folder or manifest, got {source!r}")
    _split_records(data, records)
    modalities = tuple(data["modalities"])
    return [(r.case, CaseLoader(r, modalities)) for r in records if r.split == split]


def standardisation_reference(data: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Reference quantiles per modality of ``data.standardise`` (a ``histogram_matching`` bundle name or folder),
    or ``None`` when the config has none."""
    name = data.get("standardise")
    if not name:
        return None
    from MedTransCore.bundles import find_bundle
    from MedTransCore.models.baselines import load_quantiles

    bundle = find_bundle(name)
    if bundle.family != "histogram_matching":
        raise InputError(f"data.standardise must name a histogram_matching bundle, {name!r} is {bundle.family}")
    return load_quantiles(bundle)


def intensity_windows(data: dict[str, Any]) -> dict[str, Window]:
    """The run's ``data.intensity_window`` as ``{modality: (low, high)}`` (empty without one), checked as a bundle's
    would be (:mod:`MedTransCore.intensity_window`) against the run's modalities and pairs.

    Raises:
        InputError: a bad window, a modality the run does not have, a pair mixing windowed and unwindowed (or MR)
            modalities, or a window with ``data.standardise``.
    """
    if data.get(INTENSITY_WINDOW) is None:
        return {}
    where = f"data.{INTENSITY_WINDOW}"
    windows = parse_windows(data[INTENSITY_WINDOW], where, InputError)
    modalities = list(data["modalities"])
    unlisted = [key for key in windows if key not in modalities]
    if unlisted:
        raise InputError(f"{where}: {', '.join(unlisted)} is not among data.modalities {modalities}")
    pairs = resolve_pairs(modalities, data.get("pairs", "all"))
    check_window_pairs(windows, [([s], t) for s, t in pairs], where, InputError)
    if data.get("standardise"):
        raise InputError(f"{where} cannot be combined with data.standardise (its quantiles use the default range)")
    return windows


def build_datasets(data: dict[str, Any], *, seed: int = 0, cache_workers: int = 1) -> tuple[Any, Any | None]:
    """Train and validation datasets of random paired patches (validation: no augmentation, or ``None``).

    Raises:
        InputError: no training case.
    """
    modalities = list(data["modalities"])
    sampling = data.get("sampling", "patches")
    if sampling not in ("patches", "slices"):
        raise InputError(f"data.sampling must be patches or slices, got {sampling!r}")
    if sampling == "slices":
        return _slice_datasets(data, seed=seed, cache_workers=cache_workers)
    pairs = resolve_pairs(modalities, data.get("pairs", "all"))
    common = {
        "modalities": modalities,
        "pairs": pairs,
        "spacing": data.get("spacing"),
        "patch": data.get("patch", [64, 64, 64]),
        "cache_workers": cache_workers,
        "all_targets": bool(data.get("all_targets", False)),
        "standardise": standardisation_reference(data),
        "scheme": data.get("normalisation", MR_SCHEMES[0]),
        "windows": intensity_windows(data),
    }
    train_items = [{"case": c, "load": load} for c, load in case_loaders(data, "train")]
    if not train_items:
        raise InputError("the data config yields no training case")
    train = paired_patch_dataset(
        train_items, augment=data.get("augment", True), repeats=data.get("repeats", 1), seed=seed, **common
    )
    val_items = [{"case": c, "load": load} for c, load in case_loaders(data, "val")]
    val = None
    if val_items:
        val = paired_patch_dataset(
            val_items, augment=False, repeats=data.get("val_repeats", 4), seed=seed + 1, **common
        )
    return train, val


def _slice_datasets(data: dict[str, Any], *, seed: int, cache_workers: int) -> tuple[Any, Any | None]:
    """Train and validation slice-stack datasets (``data.sampling: slices``; validation without flips)."""
    augment = data.get("augment", True)
    flip = float(augment.get("flip_prob", 0.5)) if isinstance(augment, dict) else 0.5 * bool(augment)
    common = {
        "modalities": list(data["modalities"]),
        "spacing": data.get("spacing"),
        "context": data.get("context", 1),
        "scheme": data.get("normalisation", "zero_to_percentile"),
        "windows": intensity_windows(data),
        "patch": data.get("patch"),
        "cache_workers": cache_workers,
    }
    train_items = [{"case": c, "load": load} for c, load in case_loaders(data, "train")]
    if not train_items:
        raise InputError("the data config yields no training case")
    train = slice_stack_dataset(
        train_items,
        flip_prob=flip,
        repeats=data.get("repeats", 1),
        balance=data.get("balance", "cases"),
        seed=seed,
        **common,
    )
    val_items = [{"case": c, "load": load} for c, load in case_loaders(data, "val")]
    val = None
    if val_items:
        val = slice_stack_dataset(val_items, flip_prob=0.0, repeats=data.get("val_repeats", 4), seed=seed + 1, **common)
    return train, val


def cases_from_spec(
    spec: str,
    modalities: list[str],
    spacing: list[float] | None = None,
    *,
    split: str = "val",
    cases: list[str] | None = None,
) -> list[tuple[str, Any]]:
    """Evaluation cases named on a command line.

    Args:
        spec: a run config (``.yaml``/``.yml``/``.json`` with a ``stage``: its ``split`` cases), a data folder
            (every case, layout auto-detected), a manifest (``.csv``/``.json``: its ``split`` rows, else all), or
            ``phantom:ANATOMY:START-STOP`` (phantom seeds ``START`` to ``STOP - 1``, 64^3 at ``spacing``).
        modalities: modalities to load (the bundle's).
        spacing: phantom spacing ``(x, y, z)`` mm (default 3 mm).
        split: which split of a run config or manifest (``"val"`` or ``"test"``).
        cases: keep only these case ids, in this order (every one must exist).

    Raises:
        InputError: a spec that names nothing usable, or a listed case it does not hold.
    """
    found = _cases_of_spec(spec, modalities, spacing, split)
    if cases is None:
        return found
    by_name = dict(found)
    missing = [case for case in cases if case not in by_name]
    if missing:
        raise InputError(f"{spec} has no case {', '.join(missing)}; it has: {', '.join(by_name) or 'none'}")
    return [(case, by_name[case]) for case in cases]


def _cases_of_spec(spec: str, modalities: list[str], spacing: list[float] | None, split: str) -> list[tuple[str, Any]]:
    if spec.startswith("phantom:"):
        match = re.fullmatch(r"phantom:([a-z]+):(\d+)-(\d+)", spec)
        if not match:
            raise InputError(f"phantom data must look like phantom:head:1000-1004, got {spec!r}")
        phantom = {"anatomy": match.group(1), "val_seeds": [int(match.group(2)), int(match.group(3))]}
        return case_loaders({"modalities": modalities, "spacing": spacing, "phantom": phantom}, "val")
    path = Path(spec)
    if path.is_dir():
        records = discover_cases(path)
    elif path.suffix.lower() in (".yaml", ".yml", ".json") and path.is_file() and _is_run_config(path):
        from ..config import load_config

        return case_loaders(load_config(path)["data"], split)
    elif path.suffix.lower() in (".csv", ".json"):
        records = read_manifest(path)
        if any(r.split == split for r in records):
            records = [r for r in records if r.split == split]
    else:
        raise InputError(f"{spec!r} is not a folder, manifest, run config or phantom:ANATOMY:START-STOP")
    return [(r.case, CaseLoader(r, tuple(modalities))) for r in records]


def _is_run_config(path: Path) -> bool:
    text = path.read_text()
    content = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    return isinstance(content, dict) and "stage" in content
