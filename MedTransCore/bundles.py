"""Model bundles: a folder with ``metadata.json`` and ``*.safetensors`` weights.

Loading never unpickles (safetensors only) and checks every weight file's sha256 against the metadata.
Bundles are found in the shipped folder (``MedTransCore/models/bundles``), in ``$MEDTRANS_MODELS``
and in ``~/.medtrans/models``. A folder there whose bundle does not load is *broken*: it is listed with the reason
(:func:`broken_bundles`), and naming it says why instead of "no model named".

A bundle may state its ``domain`` (anatomy, preprocessing, real or phantom training data) and the ``source_sets``
(several co-registered sources -> one target) it accepts. :func:`choose_bundle` picks the default model for an input
whose domain :func:`MedTransCore.domain.classify_domain` measured: only a model trained on data like it, never a
phantom-trained model (nor a baseline) for a scan not marked as a phantom; a named model that does not fit runs with
a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .domain import (
    BUNDLE_ANATOMIES,
    BUNDLE_PREPROCESSING,
    BUNDLE_TRAINING_DATA,
    InputDomain,
    bundle_domain_words,
    domain_misfits,
    misfit_warning,
)
from .errors import BundleError, InputError
from .intensity_window import FIELD as INTENSITY_WINDOW
from .intensity_window import check_bundle_windows
from .modalities import MODALITIES, get_modality

SCHEMA_VERSION = 1
# Preferred family when no model is named: trained models first, then the baselines. unet before aldm: on the four
# pairs both shipped families list (CT/CBCT -> MR T2/FLAIR), phantom-head-unet has the higher test SSIM (0.22-0.30
# against 0.14-0.15) and, except CBCT -> MR FLAIR, PSNR; phantom-head-aldm has the lower test MAE (by 0.001 to 0.037
# on the [0, 1] MR scale); the unet also runs faster (README, Benchmark). An ALDM bundle is used when named (--model)
# or when it is the only trained model for the pair. The vae_transformer family comes after both until a comparison
# on validation cases says otherwise: it is the default only where no unet or aldm bundle lists the request.
FAMILY_PRIORITY = ("unet", "aldm", "vae_transformer", "s2ldm", "histogram_matching", "identity")
# Baselines: the source relabelled, or its histogram matched to quantiles measured on phantoms. With an input domain
# they are a default only for an input marked as a phantom (the demo's bar); a scan not marked as a phantom gets
# them only when named (--model identity), never silently.
BASELINE_FAMILIES = ("identity", "histogram_matching")
SHIPPED_DIR = Path(__file__).parent / "models" / "bundles"
# Fields every metadata.json must have, with their JSON types.
REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "name": str,
    "family": str,
    "version": str,
    "description": str,
    "modalities": list,
    "pairs": list,
    "spacing": (list, type(None)),
    "grid": (list, type(None)),
    "normalisation": dict,
    "sampler": (dict, type(None)),
    "network": dict,
    "training": dict,
    "metrics": dict,
    "licence": str,
    "weights": dict,
}
# Sane bounds: a bundle's spacing (mm) and grid (voxels per axis) size every resampling and sliding window.
SPACING_RANGE_MM = (0.1, 20.0)
GRID_RANGE = (1, 1024)
MAX_METADATA_BYTES = 16 << 20
MAX_METADATA_DEPTH = 32


def user_model_dirs() -> list[Path]:
    """Folders searched for user-installed bundles, in priority order."""
    dirs = []
    if os.environ.get("MEDTRANS_MODELS"):
        dirs.append(Path(os.environ["MEDTRANS_MODELS"]).expanduser())
    dirs.append(Path("~/.medtrans/models").expanduser())
    return dirs


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value (iterative: a hostile file cannot exhaust the stack here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= MAX_METADATA_DEPTH:
                stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate_metadata(meta: Any, where: str = "metadata.json") -> dict:
    """Check the bundle schema; raise ``BundleError`` naming the first problem and its field.

    Beyond the JSON types: known modalities and pairs among them, ``spacing`` three numbers within
    :data:`SPACING_RANGE_MM`, ``grid`` three integers within :data:`GRID_RANGE`, a non-empty ``normalisation`` (and
    its ``intensity_window``, :func:`MedTransCore.intensity_window.check_bundle_windows`),
    nesting at most :data:`MAX_METADATA_DEPTH` deep, and plain ``*.safetensors`` weight names with sha256 digests.
    """
    if not isinstance(meta, dict):
        raise BundleError(f"{where}: expected a JSON object")
    if _depth(meta) > MAX_METADATA_DEPTH:
        raise BundleError(f"{where}: nested more than {MAX_METADATA_DEPTH} levels deep")
    for field, kind in REQUIRED_FIELDS.items():
        if field not in meta:
            raise BundleError(f"{where}: missing field {field!r}")
        if not isinstance(meta[field], kind) or (kind is int and isinstance(meta[field], bool)):
            raise BundleError(f"{where}: field {field!r} has the wrong type ({type(meta[field]).__name__})")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"{where}: schema_version {meta['schema_version']} is not supported (expected {SCHEMA_VERSION})"
        )
    from .models.registry import FAMILY_NAMES  # no torch

    if meta["family"] not in FAMILY_NAMES:
        raise BundleError(
            f"{where}: field 'family': unknown model family {meta['family']!r}; this MedTrans knows: "
            + ", ".join(FAMILY_NAMES)
        )
    for key in meta["modalities"]:
        if not isinstance(key, str) or key not in MODALITIES:
            raise BundleError(f"{where}: field 'modalities': unknown modality {key!r}")
    for pair in meta["pairs"]:
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(p, str) and p in meta["modalities"] for p in pair)
        ):
            raise BundleError(f"{where}: field 'pairs': pair {pair!r} must be [source, target] among the modalities")
    spacing, grid = meta["spacing"], meta["grid"]
    low, high = SPACING_RANGE_MM
    if spacing is not None and not (len(spacing) == 3 and all(_is_number(v) and low <= v <= high for v in spacing)):
        raise BundleError(
            f"{where}: field 'spacing' must be three numbers from {low} to {high} mm (x, y, z) or null, got {spacing}"
        )
    low, high = GRID_RANGE
    if grid is not None and not (
        len(grid) == 3 and all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in grid)
    ):
        raise BundleError(
            f"{where}: field 'grid' must be three whole numbers of voxels from {low} to {high} (x, y, z) or null, "
            f"got {grid}"
        )
    if not meta["normalisation"]:
        raise BundleError(
            f"{where}: field 'normalisation' is empty; it must say how inputs are normalised "
            '(e.g. {"scheme": "MedTransCore.modalities"})'
        )
    if "domain" in meta:
        _validate_domain(meta["domain"], where)
    if "source_sets" in meta:
        _validate_source_sets(meta["source_sets"], meta["modalities"], where)
    if INTENSITY_WINDOW in meta["normalisation"]:
        check_bundle_windows(meta, where)
    for filename, digest in meta["weights"].items():
        if not filename.endswith(".safetensors") or "/" in filename or "\\" in filename:
            raise BundleError(f"{where}: weight file {filename!r} must be a plain *.safetensors name")
        if not (isinstance(digest, str) and len(digest) == 64):
            raise BundleError(f"{where}: weight file {filename!r} needs a sha256 hex digest")
    return meta


def _validate_domain(domain: Any, where: str) -> None:
    """``{"anatomy": ..., "preprocessing": ..., "training_data": ...}`` with the known words."""
    allowed = {
        "anatomy": BUNDLE_ANATOMIES,
        "preprocessing": BUNDLE_PREPROCESSING,
        "training_data": BUNDLE_TRAINING_DATA,
    }
    if not isinstance(domain, dict):
        raise BundleError(f"{where}: field 'domain' must be an object with keys {', '.join(allowed)}")
    unknown = sorted(set(domain) - set(allowed))
    if unknown:
        raise BundleError(f"{where}: field 'domain': unknown key {unknown[0]!r}; it has {', '.join(allowed)}")
    for key, words in allowed.items():
        if domain.get(key) not in words:
            raise BundleError(
                f"{where}: field 'domain.{key}' must be one of {', '.join(words)}, got {domain.get(key)!r}"
            )


def _validate_source_sets(sets: Any, modalities: list, where: str) -> None:
    """``[{"sources": [two or more distinct modalities], "target": modality not among them}, ...]``, no repeats."""
    if not isinstance(sets, list):
        raise BundleError(f'{where}: field \'source_sets\' must be a list of {{"sources": [...], "target": ...}}')
    seen = set()
    for entry in sets:
        if not (isinstance(entry, dict) and set(entry) == {"sources", "target"} and isinstance(entry["sources"], list)):
            raise BundleError(
                f'{where}: field \'source_sets\': {entry!r} must be {{"sources": [modalities], "target": modality}}'
            )
        sources, target = entry["sources"], entry["target"]
        for key in [*sources, target]:
            if not isinstance(key, str) or key not in MODALITIES or key not in modalities:
                raise BundleError(f"{where}: field 'source_sets': unknown modality {key!r} (not among the modalities)")
        if len(sources) < 2:
            raise BundleError(f"{where}: field 'source_sets': {sources!r} has one source; list one source in 'pairs'")
        if len(set(sources)) != len(sources):
            raise BundleError(f"{where}: field 'source_sets': {sources!r} names a source twice")
        if target in sources:
            raise BundleError(f"{where}: field 'source_sets': the target {target} is among its sources {sources!r}")
        key = (frozenset(sources), target)
        if key in seen:
            raise BundleError(f"{where}: field 'source_sets': {sorted(sources)} -> {target} is listed twice")
        seen.add(key)


@dataclass
class Bundle:
    """A validated model bundle on disk."""

    path: Path
    metadata: dict

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def family(self) -> str:
        return self.metadata["family"]

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(p) for p in self.metadata["pairs"]]

    def supports(self, source: str, target: str) -> bool:
        return (source, target) in self.pairs

    def supports_sources(self, sources: Sequence[str], target: str) -> bool:
        """One source: :meth:`supports`; several: a ``source_sets`` entry with exactly that set (any order)."""
        sources = list(sources)
        if len(sources) == 1:
            return self.supports(sources[0], target)
        if not sources or len(set(sources)) != len(sources):
            return False
        wanted = set(sources)
        return any(set(s["sources"]) == wanted and s["target"] == target for s in self.metadata.get("source_sets", []))

    @property
    def is_baseline(self) -> bool:
        return self.family in BASELINE_FAMILIES

    @property
    def domain(self) -> dict | None:
        """The metadata's ``domain``; for bundles written before it existed, what their metadata implies.

        An ``identity`` bundle needs no training data (any input); a bundle whose ``training.data.source`` is
        ``"phantom"`` was trained on phantoms; anything else says nothing (``None``: no default for a known input).
        """
        if "domain" in self.metadata:
            return self.metadata["domain"]
        if self.family == "identity":
            return {"anatomy": "any", "preprocessing": "any", "training_data": "none"}
        data = (self.metadata.get("training") or {}).get("data")
        if isinstance(data, dict) and data.get("source") == "phantom":
            anatomy = (data.get("phantom") or {}).get("anatomy", "any")
            anatomy = anatomy if anatomy in BUNDLE_ANATOMIES else "any"
            return {
                "anatomy": anatomy,
                "preprocessing": "whole-head" if anatomy == "head" else "any",
                "training_data": "phantom",
            }
        return None

    def load_weights(self, filename: str) -> dict:
        """Load one ``*.safetensors`` file (no unpickling) after checking its sha256.

        Returns:
            a ``{name: torch.Tensor}`` state dict on the CPU.
        """
        from safetensors.torch import load_file

        expected = self.metadata["weights"].get(filename)
        if expected is None:
            raise BundleError(f"bundle {self.name!r}: {filename!r} is not listed in its metadata")
        path = self.path / filename
        if not path.is_file():
            raise BundleError(f"bundle {self.name!r}: weight file {filename} is missing from {self.path}")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"bundle {self.name!r}: {filename} has sha256 {actual[:12]}…, metadata says {expected[:12]}…; "
                "the file is corrupt or was replaced"
            )
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several types for a damaged file
            raise BundleError(f"bundle {self.name!r}: cannot read {filename}: {exc}") from exc


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a bundle folder; every listed weight file must exist (hashes are checked on load)."""
    path = Path(path)
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise BundleError(f"{path} is not a model bundle (no metadata.json)")
    if meta_path.stat().st_size > MAX_METADATA_BYTES:
        raise BundleError(f"{meta_path}: larger than {MAX_METADATA_BYTES >> 20} MB; not a bundle's metadata")
    try:
        meta = json.loads(meta_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{meta_path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc})") from exc
    except RecursionError:
        raise BundleError(f"{meta_path}: nested more than {MAX_METADATA_DEPTH} levels deep") from None
    validate_metadata(meta, str(meta_path))
    for filename in meta["weights"]:
        if not (path / filename).is_file():
            raise BundleError(f"bundle {meta['name']!r}: weight file {filename} is missing from {path}")
    return Bundle(path=path, metadata=meta)


def save_bundle(directory: str | Path, metadata: dict, weights: dict[str, dict]) -> Bundle:
    """Write a bundle atomically: weights as safetensors, their sha256 into ``metadata.json``.

    Args:
        directory: the bundle folder to create (must not exist).
        metadata: every field of the schema except ``weights`` and ``schema_version``.
        weights: ``{"model.safetensors": {tensor_name: tensor}}``.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    if directory.exists():
        raise BundleError(f"{directory} already exists; choose a new folder for the bundle")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".bundle-", dir=directory.parent))
    try:
        hashes = {}
        for filename, tensors in weights.items():
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / filename))
            hashes[filename] = sha256_file(tmp / filename)
        meta = {"schema_version": SCHEMA_VERSION, **metadata, "weights": hashes}
        validate_metadata(meta)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        # mkdtemp makes a private folder; a bundle is meant to be shared like any installed file.
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.chmod(0o755)
        tmp.rename(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_bundle(directory)


@dataclass
class BrokenBundle:
    """A folder in a model folder whose bundle does not load.

    Attributes:
        path: the folder.
        name: the ``name`` its metadata gives when that much can be read, else the folder name.
        reason: the loading error.
    """

    path: Path
    name: str
    reason: str


def _claimed_name(folder: Path) -> str:
    """The metadata's ``name`` when the file parses and has one, else the folder name (for messages only)."""
    try:
        name = json.loads((folder / "metadata.json").read_bytes().decode("utf-8")).get("name")
    except (ValueError, RecursionError, AttributeError, OSError):
        return folder.name
    return name if isinstance(name, str) and name else folder.name


def scan_bundles() -> tuple[list[Bundle], list[BrokenBundle]]:
    """Every bundle folder of the shipped folder and the user folders: ``(valid, broken)``.

    A name found twice resolves to the first folder (shipped, then ``$MEDTRANS_MODELS``, then ``~/.medtrans/models``).
    Hidden folders are bundles being written (save_bundle's temporary folder) and are not looked at.
    """
    found: dict[str, Bundle] = {}
    broken: list[BrokenBundle] = []
    for root in [SHIPPED_DIR, *user_model_dirs()]:
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if child.name.startswith(".") or not (child / "metadata.json").is_file():
                continue
            try:
                bundle = load_bundle(child)
            except BundleError as exc:
                broken.append(BrokenBundle(child, _claimed_name(child), str(exc)))
                continue
            found.setdefault(bundle.name, bundle)
    return list(found.values()), broken


def installed_bundles() -> list[Bundle]:
    """Every valid bundle in the shipped folder and the user folders (see :func:`broken_bundles` for the rest)."""
    return scan_bundles()[0]


def broken_bundles() -> list[BrokenBundle]:
    """Every bundle folder in the shipped folder and the user folders that does not load, with the reason."""
    return scan_bundles()[1]


def find_bundle(name_or_dir: str | Path) -> Bundle:
    """Resolve a bundle by folder path or installed name.

    Raises:
        BundleError: ``model X is broken: <reason>`` for a broken installed bundle of that name (or folder name),
            else ``no model named X`` with the installed names.
    """
    path = Path(name_or_dir).expanduser()
    if path.is_dir():
        return load_bundle(path)
    bundles, broken = scan_bundles()
    for bundle in bundles:
        if bundle.name == str(name_or_dir):
            return bundle
    for entry in broken:
        if str(name_or_dir) in (entry.name, entry.path.name):
            raise BundleError(f"model {str(name_or_dir)!r} is broken: {entry.reason}")
    names = ", ".join(b.name for b in bundles) or "none"
    raise BundleError(f"no model named {str(name_or_dir)!r}; installed: {names}")


def _default_rank(bundle: Bundle, domain: InputDomain | None = None) -> tuple:
    """Sort key of the default choice.

    Trained models before baselines; with a domain, a model trained on the input's kind of data (real data for a
    scan, phantoms for a phantom) before the other; then the family priority, the specialist (fewest pairs), the name.
    """
    family = FAMILY_PRIORITY.index(bundle.family) if bundle.family in FAMILY_PRIORITY else len(FAMILY_PRIORITY)
    if domain is None:
        return family, len(bundle.pairs), bundle.name
    data = (bundle.domain or {}).get("training_data")
    preferred = "phantom" if domain.kind == "phantom" else "real"
    return int(bundle.is_baseline), int(data != preferred), family, len(bundle.pairs), bundle.name


def _request(source_modalities: str | Sequence[str], target_modality: str) -> tuple[list[str], str]:
    sources = [source_modalities] if isinstance(source_modalities, str) else list(source_modalities)
    if not sources:
        raise InputError("no source modality given")
    for key in [*sources, target_modality]:
        get_modality(key)
    if len(set(sources)) != len(sources):
        raise InputError(f"a source modality is given twice: {', '.join(sources)}")
    return sources, " + ".join(sources) + f"->{target_modality}"


def _default_misfits(bundle: Bundle, domain: InputDomain) -> list[str]:
    """Why a bundle is not a default for this input (empty: it is a candidate)."""
    misfits = domain_misfits(domain, bundle.domain)
    if bundle.is_baseline and domain.kind != "phantom":
        misfits.append(
            "a baseline (no learned translation) is never a silent default for a scan not marked as a phantom"
        )
    return misfits


def choose_bundle(
    source_modalities: str | Sequence[str],
    target_modality: str,
    model: str | Path | None = None,
    *,
    domain: InputDomain | None = None,
) -> tuple[Bundle, list[str]]:
    """The model to run for a request, and warnings about it.

    Args:
        source_modalities: one source modality key, or several co-registered ones (a ``source_sets`` request).
        target_modality: the target's key.
        model: a bundle name or folder; ``None`` picks the default.
        domain: the input's :func:`MedTransCore.domain.classify_domain`; ``None`` (a request checked before any
            voxel is read) keeps the choice by pair and family alone.

    Returns:
        ``(bundle, warnings)``; a named model whose training domain does not fit the input runs, with a warning
        naming both domains.

    Raises:
        InputError: the named model does not support the request; no installed model supports it; or (with a
            domain and no model named) none of those that support it fits the input: the message lists them with
            their domains and says how to force one (``--model NAME``).
        BundleError: the named model is missing or broken.

    Cheap (no torch): GUIs call it to validate a request before starting a run.
    """
    sources, request = _request(source_modalities, target_modality)
    if model is not None:
        bundle = find_bundle(model)
        if not bundle.supports_sources(sources, target_modality):
            pairs = ", ".join(f"{s}->{t}" for s, t in bundle.pairs)
            sets = [" + ".join(e["sources"]) + f"->{e['target']}" for e in bundle.metadata.get("source_sets", [])]
            raise InputError(
                f"model {bundle.name!r} does not support {request}; it supports: {', '.join([pairs, *sets])}"
            )
        warning = misfit_warning(bundle.name, bundle.domain, domain) if domain is not None else None
        warnings = [warning] if warning else []
        return bundle, warnings
    supporting = [b for b in installed_bundles() if b.supports_sources(sources, target_modality)]
    if not supporting:
        raise InputError(f"no installed model supports {request}; see `medtrans models`")
    if domain is None:
        return min(supporting, key=_default_rank), []
    fitting = [b for b in supporting if not _default_misfits(b, domain)]
    if not fitting:
        listed = " | ".join(
            f"{b.name} ({bundle_domain_words(b.domain)}): {'; '.join(_default_misfits(b, domain))}"
            for b in sorted(supporting, key=lambda b: _default_rank(b, domain))
        )
        raise InputError(
            f"no installed model fits this input ({domain.describe()}) for {request}. Installed for this request: "
            f"{listed}. To run one anyway, name it with --model NAME (you will get a warning); "
            "better, install a model trained on data like this input"
        )
    return min(fitting, key=lambda b: _default_rank(b, domain)), []


def select_bundle(
    source_modality: str | Sequence[str],
    target_modality: str,
    model: str | Path | None = None,
    *,
    domain: InputDomain | None = None,
) -> Bundle:
    """The bundle :func:`choose_bundle` picks, without its warnings (callers that show none: validation, listing)."""
    return choose_bundle(source_modality, target_modality, model, domain=domain)[0]
