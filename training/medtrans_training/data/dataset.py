"""Paired training data: cases -> cached normalised volumes -> random (source, target) patches.

Each case is loaded once (MONAI ``CacheDataset``): every modality is read (or simulated by the phantom
generator), body-masked, normalised and resampled exactly as ``MedTransCore.translate`` does at inference,
then put on one common grid. Each ``__getitem__`` then draws a modality pair of that case, crops a patch of
the model grid (mostly inside the body), and augments it (flips, small affine, MR source intensity scale).
Item keys are those documented in ``medtrans_training.stages.base``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import CacheDataset
from monai.transforms import (
    Compose,
    MapTransform,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    Randomizable,
    SpatialPadd,
    Transform,
)

from MedTransCore.errors import InputError
from MedTransCore.modalities import MR_SCHEMES, get_modality, normalisation_params, normalise_with_scheme
from MedTransCore.models.baselines import match_quantiles, volume_quantiles
from MedTransCore.preprocess import body_mask, resample_like, resample_to_spacing

# Normalised value of "nothing" (air / no MR signal), as in MedTransCore.translate.
BACKGROUND = -1.0
AUGMENT_DEFAULTS = {
    "flip_prob": 0.5,
    "flip_axes": [0, 1, 2],  # array axes (z, y, x); [2] = left-right only for RAS-like volumes
    "affine_prob": 0.3,
    "rotate": 0.1,  # radians
    "scale": 0.1,
    "intensity_prob": 0.5,
    "intensity_scale": 0.1,  # MR sources only (see RandMRScaled)
}


def normalised_on_grid(
    image: sitk.Image,
    modality: str,
    spacing: list[float] | None,
    scheme: str = MR_SCHEMES[0],
    window: tuple[float, float] | None = None,
) -> tuple[sitk.Image, sitk.Image]:
    """The inference pipeline's preparation of one image: body mask -> normalise -> resample to ``spacing``.

    ``window``: the run's intensity window of this modality (``data.intensity_window``): its ``[low, high]`` HU map
    to ``[-1, 1]`` and the values are clipped there before resampling, as ``MedTransCore.translate`` does.

    Returns:
        ``(normalised image, body mask)`` on the model spacing (mask as uint8).
    """
    mask_image = body_mask(image, modality)
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    mask = sitk.GetArrayFromImage(mask_image).astype(bool)
    params = normalisation_params(array, modality, mask, scheme=scheme, window=window)
    clip = window is not None
    normalised = sitk.GetImageFromArray(normalise_with_scheme(array, params, scheme, clip).astype(np.float32))
    normalised.CopyInformation(image)
    resampled = resample_to_spacing(normalised, spacing, default_value=BACKGROUND)
    mask = resample_to_spacing(mask_image, spacing, interpolator=sitk.sitkNearestNeighbor, default_value=0)
    return resampled, sitk.Cast(mask, sitk.sitkUInt8)


def prepare_case(
    images: dict[str, sitk.Image],
    spacing: list[float] | None,
    mask: sitk.Image | None = None,
    scheme: str = MR_SCHEMES[0],
    windows: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Put every modality of one case on the grid of the first one (at ``spacing``), normalised.

    Args:
        images: registry key -> image (all of one subject, co-registered in physical space).
        spacing: model spacing ``(x, y, z)`` in mm, or ``None`` to keep the first image's spacing.
        mask: optional body / field-of-view mask; default: the union of each image's body mask.
        scheme: MR normalisation (:data:`MedTransCore.modalities.MR_SCHEMES`).
        windows: intensity windows ``{modality: (low, high)}`` (``data.intensity_window``; see
            :func:`normalised_on_grid`); a modality without one keeps the default normalisation.

    Returns:
        ``{"images": {key: (1, Z, Y, X) float32 tensor}, "mask": (1, Z, Y, X) float32 tensor}``.
    """
    reference = None
    arrays, union = {}, None
    for key, image in images.items():
        normalised, body = normalised_on_grid(image, key, spacing, scheme, (windows or {}).get(key))
        if reference is None:
            reference = normalised
        else:
            normalised = resample_like(normalised, reference, default_value=BACKGROUND)
            body = resample_like(body, reference, interpolator=sitk.sitkNearestNeighbor, default_value=0)
        arrays[key] = torch.from_numpy(sitk.GetArrayFromImage(normalised).astype(np.float32))[None]
        body_array = sitk.GetArrayFromImage(body) > 0
        union = body_array if union is None else union | body_array
    if mask is not None:
        mask = resample_like(mask, reference, interpolator=sitk.sitkNearestNeighbor, default_value=0)
        union = sitk.GetArrayFromImage(mask) > 0
    return {"images": arrays, "mask": torch.from_numpy(union.astype(np.float32))[None]}


def resolve_pairs(modalities: list[str], pairs: str | list | None = "all") -> list[tuple[str, str]]:
    """Ordered ``(source, target)`` pairs: ``"all"`` = every ordered pair of distinct modalities."""
    for key in modalities:
        get_modality(key)
    if pairs in (None, "all"):
        return [(s, t) for s, t in itertools.permutations(modalities, 2)]
    resolved = [tuple(p) for p in pairs]
    for pair in resolved:
        if len(pair) != 2 or not all(p in modalities for p in pair):
            raise InputError(f"pair {list(pair)} must be two of data.modalities {modalities}")
    return resolved


class LoadCased(Transform):
    """Item ``{"case", "load"}`` -> ``{"case", "images", "mask"}``; ``load`` is a zero-argument callable
    returning ``(images: {key: sitk.Image}, mask: sitk.Image | None)`` (files or a phantom); ``scheme`` and
    ``windows`` as :func:`prepare_case`."""

    def __init__(
        self,
        spacing: list[float] | None,
        scheme: str = MR_SCHEMES[0],
        windows: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.spacing, self.scheme, self.windows = spacing, scheme, dict(windows or {})

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        images, mask = item["load"]()
        return {"case": item["case"], **prepare_case(images, self.spacing, mask, self.scheme, self.windows)}


class RandPaird(Randomizable, Transform):
    """Draw one allowed ``(source, target)`` pair of the case; yields the keys of ``stages.base``.

    With ``all_targets`` an item also holds ``"targets"`` ``(M, Z, Y, X)`` (every run modality, background where
    the case lacks it) and ``"available"`` ``(M,)`` bool, for stages that supervise every target at once.
    """

    def __init__(self, pairs: list[tuple[str, str]], modalities: list[str], all_targets: bool = False) -> None:
        self.pairs, self.index = pairs, {k: i for i, k in enumerate(modalities)}
        self.modalities, self.all_targets = modalities, all_targets

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        options = [p for p in self.pairs if p[0] in item["images"] and p[1] in item["images"]]
        if not options:
            raise InputError(f"case {item['case']!r} has no image pair among {self.pairs}")
        source, target = options[self.R.randint(len(options))]
        extra = {}
        if self.all_targets:
            blank = torch.full_like(item["mask"], BACKGROUND)
            extra["targets"] = torch.cat([item["images"].get(k, blank) for k in self.modalities])
            extra["available"] = torch.tensor([k in item["images"] for k in self.modalities])
        return {
            **extra,
            "case": item["case"],
            "source": item["images"][source].clone(),
            "target": item["images"][target].clone(),
            "mask": item["mask"].clone(),
            "source_modality": self.index[source],
            "target_modality": self.index[target],
            "source_key": source,
            "target_key": target,
        }


class HistogramStandardised(Transform):
    """Histogram-match the item's whole source volume onto the reference quantiles of its target modality.

    The training side of a ``unet`` bundle's ``input_standardisation``: the same
    :func:`~MedTransCore.models.baselines.match_quantiles` on the same in-body quantiles (here of the case's body
    mask on the model grid) as ``UNetTranslator`` applies at inference, before any crop.
    """

    def __init__(self, reference: dict[str, np.ndarray]) -> None:
        self.reference = reference

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        if item["target_key"] not in self.reference:
            raise InputError(f"the standardisation reference has no quantiles for {item['target_key']}")
        source = item["source"].numpy().astype(np.float64)
        quantiles = volume_quantiles(source, item["mask"].numpy() > 0)
        mapped = match_quantiles(source, quantiles, self.reference[item["target_key"]])
        return {**item, "source": torch.from_numpy(mapped.astype(np.float32))}


class RandBodyCropd(Randomizable, MapTransform):
    """A random patch centred inside the body 3 times in 4 (one dict out, unlike MONAI's list of samples)."""

    def __init__(self, keys: list[str], spatial_size: tuple[int, int, int]) -> None:
        MapTransform.__init__(self, keys)
        self.crop = RandCropByPosNegLabeld(keys=keys, label_key="mask", spatial_size=spatial_size, pos=3.0, neg=1.0)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandBodyCropd:
        super().set_random_state(seed, state)
        self.crop.set_random_state(state=self.R)
        return self

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        return self.crop(item)[0]


class RandMRScaled(Randomizable, Transform):
    """Scale an MR source's raw intensities by ``U(1 - factor, 1 + factor)`` (``x -> (x + 1) s - 1`` in normalised
    units: the spread of the robust percentile that normalises MR). CT-like sources keep their absolute HU."""

    def __init__(self, factor: float, prob: float) -> None:
        self.factor, self.prob = factor, prob

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        apply, scale = self.R.rand() < self.prob, self.R.uniform(1 - self.factor, 1 + self.factor)
        if apply and not get_modality(item["source_key"]).is_ct:
            item = {**item, "source": (item["source"] + 1.0) * scale - 1.0}
        return item


def patch_transforms(
    patch_zyx: tuple[int, int, int], augment: dict | bool, all_targets: bool = False
) -> list[Transform]:
    """Pad to the patch, crop mostly inside the body, then (optionally) augment."""
    images = ["source", "target", *(["targets"] if all_targets else [])]
    out: list[Transform] = [
        SpatialPadd(keys=images, spatial_size=patch_zyx, value=BACKGROUND),
        SpatialPadd(keys="mask", spatial_size=patch_zyx, value=0.0),
        RandBodyCropd(keys=[*images, "mask"], spatial_size=patch_zyx),
    ]
    if not augment:
        return out
    overrides = augment if isinstance(augment, dict) else {}
    unknown = set(overrides) - set(AUGMENT_DEFAULTS)
    if unknown:
        raise InputError(
            f"unknown data.augment key(s) {', '.join(sorted(unknown))}; known: {', '.join(AUGMENT_DEFAULTS)}"
        )
    aug = {**AUGMENT_DEFAULTS, **overrides}
    keys = [*images, "mask"]
    out += [RandFlipd(keys=keys, prob=aug["flip_prob"], spatial_axis=axis) for axis in aug["flip_axes"]]
    out.append(
        RandAffined(
            keys=keys,
            prob=aug["affine_prob"],
            rotate_range=(aug["rotate"],) * 3,
            scale_range=(aug["scale"],) * 3,
            mode=("bilinear",) * len(images) + ("nearest",),
            padding_mode="border",
        )
    )
    out.append(RandMRScaled(aug["intensity_scale"], aug["intensity_prob"]))
    return out


class AsPlainTensorsd(Transform):
    """Drop MONAI's MetaTensor wrapper so batches are plain tensors (and collate cheaply)."""

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        return {k: v.as_tensor() if hasattr(v, "as_tensor") else v for k, v in item.items()}


class RepeatDataset(torch.utils.data.Dataset):
    """Visit each case ``repeats`` times per epoch (different random pairs/patches each visit)."""

    def __init__(self, dataset: torch.utils.data.Dataset, repeats: int = 1) -> None:
        self.dataset, self.repeats = dataset, max(int(repeats), 1)

    def __len__(self) -> int:
        return len(self.dataset) * self.repeats

    def reseed(self, seed: int) -> None:
        """Restart the random transforms' stream (fixed validation patches)."""
        self.dataset.transform.set_random_state(seed=seed)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index % len(self.dataset)]


def paired_patch_dataset(
    items: list[dict[str, Any]],
    *,
    modalities: list[str],
    pairs: list[tuple[str, str]],
    spacing: list[float] | None,
    patch: list[int],
    augment: dict | bool = True,
    repeats: int = 1,
    cache_workers: int = 1,
    seed: int = 0,
    all_targets: bool = False,
    standardise: dict[str, np.ndarray] | None = None,
    scheme: str = MR_SCHEMES[0],
    windows: Mapping[str, tuple[float, float]] | None = None,
) -> RepeatDataset:
    """A cached dataset of random paired patches.

    Args:
        items: ``{"case": id, "load": callable}`` (see :class:`LoadCased`).
        modalities: the run's modality order (index = one-hot position).
        pairs: allowed ``(source, target)`` pairs.
        spacing: model spacing ``(x, y, z)`` mm.
        patch: model grid ``(x, y, z)`` voxels.
        augment: ``False``, ``True`` (defaults) or overrides of :data:`AUGMENT_DEFAULTS`.
        repeats: visits of each case per epoch.
        cache_workers: threads that load cases into the cache.
        seed: seed of the random transforms.
        all_targets: add every modality of the case (``"targets"``, ``"available"``; see :class:`RandPaird`).
        standardise: reference quantiles per modality: histogram-match each source onto its target's
            (:class:`HistogramStandardised`).
        scheme: MR normalisation (:data:`MedTransCore.modalities.MR_SCHEMES`).
        windows: intensity windows ``{modality: (low, high)}`` (``data.intensity_window``, see :func:`prepare_case`).
    """
    if len(patch) != 3 or min(patch) < 1:
        raise InputError(f"data.patch must be three positive ints (x, y, z), got {patch}")
    if standardise is not None and all_targets:
        raise InputError("data.standardise depends on the target, so it cannot be combined with data.all_targets")
    transform = Compose(
        [
            LoadCased(spacing, scheme, windows),
            RandPaird(pairs, modalities, all_targets),
            *([HistogramStandardised(standardise)] if standardise is not None else []),
            *patch_transforms(tuple(patch[::-1]), augment, all_targets),
            AsPlainTensorsd(),
        ]
    ).set_random_state(seed=seed)
    # copy_cache=False: RandPaird copies the two volumes it uses, never the cached case.
    cached = CacheDataset(
        items, transform=transform, cache_rate=1.0, num_workers=cache_workers, progress=False, copy_cache=False
    )
    return RepeatDataset(cached, repeats)
