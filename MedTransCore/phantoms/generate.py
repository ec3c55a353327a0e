"""Public entry: ``generate_phantom`` -> ``PhantomCase`` (co-registered images, labels, body mask)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..domain import phantom_note
from ..errors import InputError
from ..modalities import MODALITIES
from .anatomy import ANATOMIES, ct_noise_hu, make_labels
from .cbct import cbct_image
from .contrast import BOLUS_ANATOMIES, Bolus
from .ct import CT_PHASES, clean_ct, ct_image
from .fields import NoisePool, blur, separable_profiles
from .frame import grid_axes
from .mr import SEQUENCES, mr_image
from .tissues import Label, as_dict, label_names, sample_tissues, tissue_table

PHANTOM_MODALITIES: tuple[str, ...] = tuple(MODALITIES)
# Independent random streams (numpy SeedSequence keys): a subset of modalities gives the same arrays.
_GEOMETRY, _TISSUES, _TEXTURE, _BIAS, _NOISE, _CONTRAST, _MODALITY0 = 0, 1, 2, 3, 4, 5, 10
# Voxels per axis: below 8 there is no anatomy; above 512 one case needs tens of GB (nine float32 volumes and
# their float64 temporaries), so it is refused before anything is allocated.
MIN_SIZE, MAX_SIZE = 8, 512


@dataclass
class PhantomCase:
    """One simulated case: every image on the same grid as ``labels``.

    Attributes:
        anatomy: ``"head"``, ``"pelvis"`` or ``"abdomen"``.
        seed: the seed that reproduces it bit for bit.
        images: ``{modality key: float32 image}`` (HU for CT-like, a.u. for MR).
        labels: uint8 tissue labels.
        body_mask: uint8 0/1 body (every non-background label, internal air included).
        label_names: ``{label: name}``.
        tissues: ``{label: {property: value}}`` of this case (HU, T1/T2 ms, PD, gadolinium, enhancement).
        info: drawn parameters (size, lesions, sex ...; the abdomen's contrast bolus under ``"contrast"``).
    """

    anatomy: str
    seed: int
    images: dict[str, sitk.Image]
    labels: sitk.Image
    body_mask: sitk.Image
    label_names: dict[int, str]
    tissues: dict[str, dict[str, float]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``<MODALITY>.nii.gz``, ``labels.nii.gz``, ``body_mask.nii.gz`` and ``phantom.json``.

        Returns:
            ``{file stem: path}`` of every written file (``"CT"``, ..., ``"labels"``, ``"body_mask"``, ``"phantom"``).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for name, image in [*self.images.items(), ("labels", self.labels), ("body_mask", self.body_mask)]:
            paths[name] = out / f"{name}.nii.gz"
            sitk.WriteImage(image, str(paths[name]), useCompression=True)
        paths["phantom"] = out / "phantom.json"
        meta = {
            "anatomy": self.anatomy,
            "seed": self.seed,
            "shape": list(self.labels.GetSize()),
            "spacing": list(self.labels.GetSpacing()),
            "origin": list(self.labels.GetOrigin()),
            "modalities": list(self.images),
            "label_names": {str(k): v for k, v in self.label_names.items()},
            "tissues": self.tissues,
            "parameters": self.info,
            "files": [p.name for p in paths.values()],
            "synthetic": "simulated phantom, not a patient",
        }
        paths["phantom"].write_text(json.dumps(meta, indent=2))
        return paths


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream]))


def _check(anatomy, seed, shape, spacing, modalities) -> tuple[tuple[int, ...], tuple[float, ...], list[str]]:
    if anatomy not in ANATOMIES:
        raise InputError(f"unknown phantom anatomy {anatomy!r}; choose one of {', '.join(ANATOMIES)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if len(shape) != 3 or any(int(n) != n or not MIN_SIZE <= n <= MAX_SIZE for n in shape):
        raise InputError(f"shape must be three integers from {MIN_SIZE} to {MAX_SIZE} (x, y, z), got {shape!r}")
    if len(spacing) != 3 or any(not 0 < s < np.inf for s in spacing):
        raise InputError(f"spacing must be three positive finite sizes in mm (x, y, z), got {spacing!r}")
    keys = list(PHANTOM_MODALITIES) if modalities is None else list(modalities)
    unknown = [k for k in keys if k not in PHANTOM_MODALITIES]
    if unknown:
        raise InputError(f"unknown phantom modality {unknown[0]!r}; choose from {', '.join(PHANTOM_MODALITIES)}")
    return tuple(int(n) for n in shape), tuple(float(s) for s in spacing), keys


def generate_phantom(
    anatomy: str = "head",
    seed: int = 0,
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    modalities: list[str] | None = None,
) -> PhantomCase:
    """Simulate one co-registered multi-modal case.

    Args:
        anatomy: ``"head"``, ``"pelvis"`` or ``"abdomen"`` (``ANATOMIES``).
        seed: non-negative integer; the same seed gives bit-identical arrays.
        shape: voxels along (x, y, z), each from ``MIN_SIZE`` to ``MAX_SIZE``.
        spacing: voxel size along (x, y, z) in mm; the volume is centred at the origin, identity direction.
        modalities: registry keys to simulate (default: all of ``PHANTOM_MODALITIES``); each modality has
            its own random stream, so a subset gives the same images as the full set.

    Returns:
        The ``PhantomCase``; images are float32 arrays of size ``shape`` (SimpleITK x, y, z order).

    Raises:
        InputError (a ValueError): unknown anatomy or modality, bad seed, shape or spacing.
    """
    shape, spacing, keys = _check(anatomy, seed, shape, spacing, modalities)
    labels, info = make_labels(anatomy, shape, spacing, _rng(seed, _GEOMETRY))
    tissues = sample_tissues(tissue_table(anatomy), _rng(seed, _TISSUES))
    # The abdomen's iodine enhancement: one bolus per patient (dose, scan times) on time-enhancement curves.
    contrast = _rng(seed, _CONTRAST) if anatomy in BOLUS_ANATOMIES else None
    bolus = Bolus.sample(contrast) if contrast is not None else None
    if bolus is not None:
        tissues = bolus.apply(tissues)
        info["contrast"] = bolus.info()
    body = labels > 0
    pool = NoisePool(_rng(seed, _NOISE), labels.shape)
    texture = pool.smooth(_rng(seed, _TEXTURE), 1.0)
    axes = grid_axes(shape, spacing)
    arrays: dict[str, np.ndarray] = {}
    if any(k in CT_PHASES or k == "CBCT" for k in keys):
        weight = blur(body.astype(np.float32), 1.0)
        phases = [p for p in CT_PHASES if p in keys or p == "CT"]
        extra = dict.fromkeys(phases)
        if bolus is not None:  # the arciform arterial spleen: bands of a smooth field, drawn with the bolus
            bands = pool.smooth(contrast, 1.5)
            extra = {p: bolus.heterogeneity(labels, bands, CT_PHASES[p]) for p in phases}
        clean = {p: clean_ct(labels, tissues, texture, CT_PHASES[p], extra[p]) for p in phases}
    fov = max(n * s for n, s in zip(shape, spacing, strict=True))
    if any(k in SEQUENCES for k in keys):  # one receive coil: a bias shared by the sequences, varied a little
        coil = separable_profiles(_rng(seed, _BIAS), axes, amplitude=0.3, wavelength=1.5 * fov)
    for key in keys:
        rng = _rng(seed, _MODALITY0 + PHANTOM_MODALITIES.index(key))
        if key in CT_PHASES:
            arrays[key] = ct_image(clean[key], weight, pool.white(rng), rng, ct_noise_hu(anatomy))
        elif key == "CBCT":
            bone = labels == Label.CORTICAL_BONE
            arrays[key] = cbct_image(clean["CT"], body, weight, bone, axes, pool, rng)
        else:
            own = separable_profiles(rng, axes, amplitude=0.05, wavelength=fov)
            bias = tuple(np.exp(c + o) for c, o in zip(coil, own, strict=True))
            noise = (pool.white(rng), pool.white(rng))
            arrays[key] = mr_image(labels, tissues, SEQUENCES[key], texture, bias, noise, rng)
    origin = tuple(float(a[0]) for a in axes)

    def image(array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        # Provenance that travels with the image (NIfTI descrip, NRRD/MetaImage notes): read by
        # MedTransCore.domain.domain_hints so that a phantom is never mistaken for a patient, nor the reverse.
        img.SetMetaData("ITK_FileNotes", phantom_note(anatomy, seed))
        return img

    return PhantomCase(
        anatomy=anatomy,
        seed=int(seed),
        images={k: image(arrays[k].astype(np.float32, copy=False)) for k in keys},
        labels=image(labels),
        body_mask=image(body.astype(np.uint8)),
        label_names=label_names(anatomy),
        tissues=as_dict(tissues),
        info=info,
    )
