"""Slice-stack training data (``data.sampling: slices``): every axial slice of every case is a sample.

Cases are loaded and cached exactly like the patch datasets (:class:`~.dataset.LoadCased`: the inference
pipeline's normalisation, on the first modality's grid). An item is then one axial slice of one case, with
``context`` neighbours on each side, cropped in-plane to ``patch`` around a random point of the body (brain)
mask of that slice. Items hold:

* ``"images"``: ``(M, 2 * context + 1, H, W)`` float32, one group per modality of ``data.modalities``; a modality
  the case lacks is the background value;
* ``"available"``: ``(M,)`` bool, the modalities the case has;
* ``"mask"``: ``(1, H, W)`` float32, the body mask of the centre slice;
* ``"masks"``: ``(2 * context + 1, H, W)`` float32, the body mask of every slice of the stack (a stack used as a
  clip of consecutive slices, ``vid2vid``);
* ``"case"``: the case id.

Only in-plane flips are applied here; stages augment in-plane geometry and intensities on whole batches.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.data import CacheDataset
from monai.transforms import Randomizable, Transform

from MedTransCore.errors import InputError
from MedTransCore.modalities import MR_SCHEMES

from .dataset import BACKGROUND, LoadCased

# A slice is drawn only when at least this many of its voxels are in the body mask.
MIN_BODY_VOXELS = 64
#: ``data.balance``: how often each case is visited per epoch (see :class:`SliceStacks`).
BALANCES = ("cases", "pairs")


class RandSliceStackd(Randomizable, Transform):
    """Cached case -> one random slice stack (see the module docstring).

    Args:
        modalities: the run's modality order.
        context: neighbouring slices on each side.
        patch_yx: in-plane crop ``(H, W)``; ``None`` keeps the whole slice.
        flip_prob: probability of a left-right flip (the last array axis).
    """

    def __init__(self, modalities: list[str], context: int, patch_yx: tuple[int, int] | None, flip_prob: float) -> None:
        self.modalities, self.context, self.patch_yx, self.flip_prob = modalities, context, patch_yx, flip_prob

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        mask = item["mask"][0]  # (Z, Y, X)
        counts = mask.flatten(1).sum(1)
        slices = torch.nonzero(counts >= MIN_BODY_VOXELS).flatten()
        if len(slices) == 0:
            raise InputError(f"case {item['case']!r} has no slice with {MIN_BODY_VOXELS} body voxels")
        z = int(slices[self.R.randint(len(slices))])
        depth, height, width = mask.shape
        rows = (torch.arange(z - self.context, z + self.context + 1)).clamp(0, depth - 1)
        h, w = self.patch_yx or (height, width)
        if self.patch_yx is None:
            top, left = 0, 0
        else:
            points = torch.nonzero(mask[z] > 0)
            cy, cx = (int(v) for v in points[self.R.randint(len(points))])
            top, left = cy - h // 2, cx - w // 2
        images = torch.full((len(self.modalities), len(rows), h, w), BACKGROUND)
        crop_masks = torch.zeros((len(rows), h, w))
        # The part of the crop inside the volume (a crop near the border is padded with background).
        y0, y1 = max(top, 0), min(top + h, height)
        x0, x1 = max(left, 0), min(left + w, width)
        for m, key in enumerate(self.modalities):
            if key in item["images"]:
                images[m, :, y0 - top : y1 - top, x0 - left : x1 - left] = item["images"][key][0][rows, y0:y1, x0:x1]
        crop_masks[:, y0 - top : y1 - top, x0 - left : x1 - left] = mask[rows, y0:y1, x0:x1]
        if self.R.rand() < self.flip_prob:
            images, crop_masks = images.flip(-1), crop_masks.flip(-1)
        available = torch.tensor([key in item["images"] for key in self.modalities])
        centre = crop_masks[self.context : self.context + 1].clone()
        return {"case": item["case"], "images": images, "available": available, "mask": centre, "masks": crop_masks}


class SliceStacks(torch.utils.data.Dataset):
    """Random slice stacks of cached cases, each case visited ``repeats * weight`` times per epoch.

    Args:
        cases: the cached, prepared cases (:class:`~.dataset.LoadCased` outputs).
        transform: the random slice-stack draw.
        repeats: visits of a case of weight 1 per epoch.
        balance: ``"cases"``: every case weight 1; ``"pairs"``: a case's weight is its number of ordered
            (input, output) sequence pairs, ``n (n - 1)`` for ``n`` sequences, so a case with all four sequences
            (12 pairs) is drawn six times as often as one with two. Every pair a case teaches then gets the same
            share of the training, instead of the most common sequences (FLAIR and T1c of the many two-sequence
            cases) taking most steps while the rarer T1 <-> T2 pairs go under-trained.
    """

    def __init__(self, cases: CacheDataset, transform: RandSliceStackd, repeats: int, balance: str) -> None:
        if balance not in BALANCES:
            raise InputError(f"data.balance must be one of {list(BALANCES)}, got {balance!r}")
        self.cases, self.transform = cases, transform
        sizes = [len(cases[i]["images"]) for i in range(len(cases))]
        weights = [1 if balance == "cases" else max(n * (n - 1), 1) for n in sizes]
        self.index = [i for i, w in enumerate(weights) for _ in range(max(int(repeats), 1) * w)]

    def __len__(self) -> int:
        return len(self.index)

    def reseed(self, seed: int) -> None:
        """Restart the random draws' stream (fixed validation slices)."""
        self.transform.set_random_state(seed=seed)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.transform(self.cases[self.index[index]])


def slice_stack_dataset(
    items: list[dict[str, Any]],
    *,
    modalities: list[str],
    spacing: list[float] | None,
    context: int,
    patch: list[int] | None,
    flip_prob: float = 0.5,
    repeats: int = 1,
    balance: str = "cases",
    cache_workers: int = 1,
    seed: int = 0,
    scheme: str = MR_SCHEMES[0],
    windows: Mapping[str, tuple[float, float]] | None = None,
) -> SliceStacks:
    """A cached dataset of random slice stacks.

    Args:
        items: ``{"case": id, "load": callable}`` (see :class:`~.dataset.LoadCased`).
        modalities: the run's modality order.
        spacing: model spacing ``(x, y, z)`` mm (``None``: each case's own).
        context: neighbouring slices on each side.
        patch: in-plane crop ``(x, y)`` voxels, or ``None`` for whole slices.
        flip_prob: left-right flip probability (0 for validation).
        repeats: visits of each case per epoch (a case has ~150 slices: use large values).
        balance: ``"cases"`` or ``"pairs"`` (see :class:`SliceStacks`).
        cache_workers: threads that load cases into the cache.
        seed: seed of the random draws.
        scheme: MR normalisation (``data.normalisation``, :func:`MedTransCore.modalities.normalisation_params`).
        windows: intensity windows ``{modality: (low, high)}`` (``data.intensity_window``, see
            :func:`~.dataset.prepare_case`).
    """
    if patch is not None and (len(patch) != 2 or min(patch) < 1):
        raise InputError(f"data.patch must be two positive ints (x, y) with data.sampling: slices, got {patch}")
    if not isinstance(context, int) or context < 0:
        raise InputError(f"data.context must be a non-negative int, got {context!r}")
    patch_yx = None if patch is None else (int(patch[1]), int(patch[0]))
    draw = RandSliceStackd(modalities, context, patch_yx, flip_prob)
    draw.set_random_state(seed=seed)
    cached = CacheDataset(
        items,
        transform=LoadCased(spacing, scheme, windows),
        cache_rate=1.0,
        num_workers=cache_workers,
        progress=False,
        copy_cache=False,
    )
    return SliceStacks(cached, draw, repeats, balance)
