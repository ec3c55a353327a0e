"""CBCT simulated from each case's CT (``data.cbct_simulation``), made once and cached on disk.

``MedTransCore.phantoms.cone_beam.simulate_cbct`` projects a CT through a cone-beam geometry (noise, scatter, beam
hardening) and reconstructs it with FDK: about 30 s for a 128^3 volume on a CPU, far too slow for every epoch. Each
result is stored under ``<cache>/<key>``, where ``key`` is the sha256 of the CT's voxels and geometry, the
simulation settings (with the case's own seed) and :data:`FORMAT_VERSION`::

    <key>.nii.gz       the CBCT (float32 HU, on the CT's grid)
    <key>-fov.nii.gz   its field of view (uint8, 1 = reconstructed)
    <key>.json         settings and the simulator's metadata; written last, so its presence marks a complete entry

Every file is written to a temporary name in the same folder and moved with ``os.replace``, so DataLoader workers
and DDP ranks that fill the cache at once never read half a file (two writers of one key write the same bytes). An
entry that cannot be read back, or is not on the CT's grid, is simulated again and overwritten.

Outside the field of view a cone-beam scan measures nothing, so a CT voxel there cannot be predicted from the CBCT
(and a CBCT voxel there says nothing about the CT). :class:`SimulatedCBCTLoader` therefore sets every modality of the
case to its background there (-1000 HU for CT-like images, 0 for MR), as a real CBCT/CT pair cropped to the CBCT's
field of view looks: the pair agrees outside it, the body masks (random crops, loss weights, evaluation masks) stay
inside it, and the model is never taught to hallucinate anatomy from air. A mask the case brings is cut to the FOV.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from MedTransCore.errors import InputError
from MedTransCore.modalities import get_modality

__all__ = [
    "DEFAULT_CACHE",
    "FORMAT_VERSION",
    "CBCTCache",
    "SimulatedCBCTLoader",
    "cache_key",
    "case_seed",
    "inner_modalities",
    "make_settings",
    "simulation_loaders",
    "simulation_settings",
]

#: Bump when the stored files or what goes into the key change: old entries are then never read.
FORMAT_VERSION = 1
#: ``data.cbct_simulation.cache`` when the config does not set it (relative to the current directory).
DEFAULT_CACHE = "runs/cbct-cache"
AIR_HU = -1000.0


def make_settings(fields: dict[str, Any]) -> Any:
    """``ConeBeamSettings(**fields)``, lists (from YAML/JSON) as tuples so the frozen settings stay hashable."""
    from MedTransCore.phantoms.cone_beam import ConeBeamSettings

    return ConeBeamSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


def _default_simulate(ct: sitk.Image, settings: Any) -> Any:
    # Looked up at call time, so that the real simulator is the default and a test may wrap it to count calls.
    from MedTransCore.phantoms import cone_beam

    return cone_beam.simulate_cbct(ct, settings)


def cache_key(ct: sitk.Image, settings: Any) -> str:
    """sha256 (hex) of the CT's voxels (with dtype and shape), its spacing/origin/direction, the settings' JSON and
    :data:`FORMAT_VERSION`."""
    digest = hashlib.sha256(f"medtrans-cbct-cache-v{FORMAT_VERSION}\n".encode())
    array = np.ascontiguousarray(sitk.GetArrayViewFromImage(ct))
    geometry = {
        "dtype": str(array.dtype),
        "shape": list(array.shape),
        "components": ct.GetNumberOfComponentsPerPixel(),
        "spacing": list(ct.GetSpacing()),
        "origin": list(ct.GetOrigin()),
        "direction": list(ct.GetDirection()),
    }
    digest.update(json.dumps(geometry, sort_keys=True).encode())
    digest.update(array.tobytes())
    digest.update(json.dumps(settings.as_dict(), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _same_grid(image: sitk.Image, reference: sitk.Image) -> bool:
    # NIfTI stores spacing and origin as float32: compare with a tolerance, then copy the reference's exact values.
    return (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=1e-5, atol=1e-5)
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), rtol=1e-5, atol=1e-3)
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-5)
    )


class CBCTCache:
    """Simulated CBCTs stored in ``folder``, one entry per (CT, geometry, settings).

    Args:
        folder: the cache folder (created on the first write).
        simulate: ``simulate(ct, settings) -> ConeBeamResult``; default ``cone_beam.simulate_cbct``.
    """

    def __init__(self, folder: str | Path, simulate: Callable[[sitk.Image, Any], Any] | None = None) -> None:
        self.folder = Path(folder)
        self.simulate = simulate or _default_simulate

    def paths(self, key: str) -> tuple[Path, Path, Path]:
        """``(cbct, field of view, metadata)`` files of ``key``."""
        return self.folder / f"{key}.nii.gz", self.folder / f"{key}-fov.nii.gz", self.folder / f"{key}.json"

    def get(self, ct: sitk.Image, settings: Any) -> Any:
        """The ``ConeBeamResult`` of ``ct`` with ``settings``: read from the cache, else simulated and stored."""
        key = cache_key(ct, settings)
        cached = self._read(key, ct)
        if cached is not None:
            return cached
        # Real CTs are often integer files; the simulator works in float HU.
        result = self.simulate(sitk.Cast(ct, sitk.sitkFloat32), settings)
        self._write(key, ct, settings, result)
        return result

    def _read(self, key: str, ct: sitk.Image) -> Any:
        from MedTransCore.phantoms.cone_beam import ConeBeamResult

        image_path, fov_path, meta_path = self.paths(key)
        if not meta_path.is_file():
            return None
        try:
            metadata = json.loads(meta_path.read_text())["metadata"]
            image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
            fov = sitk.ReadImage(str(fov_path), sitk.sitkUInt8)
        except (OSError, RuntimeError, ValueError, KeyError, TypeError):
            return None  # unreadable or truncated: simulated again and overwritten
        if not (_same_grid(image, ct) and _same_grid(fov, ct)):
            return None
        image.CopyInformation(ct)
        fov.CopyInformation(ct)
        return ConeBeamResult(image=image, field_of_view=fov, metadata=metadata)

    def _write(self, key: str, ct: sitk.Image, settings: Any, result: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        image_path, fov_path, meta_path = self.paths(key)
        record = {
            "format": FORMAT_VERSION,
            "key": key,
            "settings": settings.as_dict(),
            "ct": {"size": list(ct.GetSize()), "spacing": list(ct.GetSpacing()), "origin": list(ct.GetOrigin())},
            "metadata": result.metadata,
        }
        # The images first and the JSON last: a reader that finds the JSON finds both images complete.
        self._replace(image_path, lambda p: sitk.WriteImage(sitk.Cast(result.image, sitk.sitkFloat32), str(p)))
        self._replace(fov_path, lambda p: sitk.WriteImage(sitk.Cast(result.field_of_view, sitk.sitkUInt8), str(p)))
        text = json.dumps(record, indent=1, sort_keys=True, default=str)
        self._replace(meta_path, lambda p: p.write_text(text))

    @staticmethod
    def _replace(path: Path, write: Callable[[Path], None]) -> None:
        suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix  # SimpleITK picks the writer by suffix
        temporary = path.with_name(f".{path.name[: -len(suffix)]}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{suffix}")
        try:
            write(temporary)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)


def case_seed(seed: int, case: str) -> int:
    """The simulation seed of one case: its own noise, the same in every run and process (not Python's ``hash``)."""
    digest = hashlib.sha256(f"{int(seed)}:{case}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _background(modality: str) -> float:
    return AIR_HU if get_modality(modality).is_ct else 0.0


def _outside_set(image: sitk.Image, fov: sitk.Image, value: float) -> sitk.Image:
    """``image`` with the voxels outside ``fov`` (resampled onto its grid where needed) set to ``value``."""
    from MedTransCore.preprocess import resample_like

    if not _same_grid(image, fov):
        fov = resample_like(fov, image, interpolator=sitk.sitkNearestNeighbor, default_value=0)
    inside = sitk.GetArrayViewFromImage(fov) > 0
    array = sitk.GetArrayFromImage(image)
    array[~inside] = value
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


@dataclass
class SimulatedCBCTLoader:
    """One case whose CBCT is simulated from its CT (picklable, like the loaders it wraps).

    Args:
        inner: the case's own loader, asked for CT and the run's other modalities but not CBCT.
        modalities: what this loader returns (the run's modalities; CBCT among them).
        settings: ``ConeBeamSettings`` fields, with this case's ``seed``.
        cache: the cache folder.
    """

    inner: Any
    modalities: tuple[str, ...]
    settings: dict[str, Any]
    cache: str

    def __call__(self) -> tuple[dict[str, sitk.Image], sitk.Image | None]:
        images, mask = self.inner()
        ct = images.get("CT")
        if ct is None:  # nothing to simulate from: the case keeps what it has (its pairs without CBCT)
            return {k: v for k, v in images.items() if k in self.modalities}, mask
        result = CBCTCache(self.cache).get(ct, make_settings(self.settings))
        images = {**images, "CBCT": result.image}
        fov = result.field_of_view
        out = {k: _outside_set(images[k], fov, _background(k)) for k in self.modalities if k in images}
        if mask is not None:
            mask = _outside_set(sitk.Cast(mask, sitk.sitkUInt8), fov, 0)
        return out, mask


def simulation_settings(spec: dict[str, Any], path: str = "data.cbct_simulation") -> tuple[dict[str, Any], int, str]:
    """``(ConeBeamSettings fields, base seed, absolute cache folder)`` of a ``data.cbct_simulation`` mapping.

    Args:
        spec: the mapping.
        path: its dotted name in the config (for messages).

    Raises:
        InputError: a key that is not a ``ConeBeamSettings`` field (or ``cache``), or a bad value.
    """
    if not isinstance(spec, dict):
        raise InputError(f"{path} must be a mapping of ConeBeamSettings fields (and cache)")
    from MedTransCore.phantoms.cone_beam import ConeBeamSettings

    fields = {k: v for k, v in spec.items() if k != "cache"}
    names = {f.name for f in dataclasses.fields(ConeBeamSettings)}
    unknown = set(fields) - names
    if unknown:
        first, allowed = sorted(unknown)[0], sorted(names | {"cache"})
        close = difflib.get_close_matches(first, allowed, n=1)
        hint = f"; did you mean {path}.{close[0]}?" if close else ""
        raise InputError(f"unknown key {path}.{first}; allowed keys of {path}: {', '.join(allowed)}{hint}")
    try:
        make_settings(fields)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: {exc}") from exc
    seed = int(fields.pop("seed", 0))
    cache = str(Path(spec.get("cache") or DEFAULT_CACHE).expanduser().resolve())
    return fields, seed, cache


def simulation_loaders(
    loaders: list[tuple[str, Any]], modalities: tuple[str, ...], spec: dict[str, Any]
) -> list[tuple[str, SimulatedCBCTLoader]]:
    """Wrap each ``(case, loader)`` (built to load CT and the other modalities) so that its CBCT is simulated.

    Args:
        loaders: the cases of one split, their loaders asked for :func:`inner_modalities`.
        modalities: the run's modalities (what the wrapped loaders return).
        spec: the ``data.cbct_simulation`` mapping.
    """
    fields, seed, cache = simulation_settings(spec)
    return [
        (case, SimulatedCBCTLoader(load, tuple(modalities), {**fields, "seed": case_seed(seed, case)}, cache))
        for case, load in loaders
    ]


def inner_modalities(modalities: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """What a wrapped loader is asked for: CT first (the simulation's input), then the others except CBCT."""
    return ("CT", *(k for k in modalities if k not in ("CT", "CBCT")))
