"""Preprocessing steps between a read image and a model window, each with an exact inverse.

* :func:`body_mask` - the patient's body (CT threshold or MR Otsu), for normalisation and metrics;
* :func:`resample_to_spacing` / :func:`resample_like` - onto the model's spacing and back onto the source grid
  (:func:`resampled_size` sizes the model grid before anything is allocated, for the memory guard);
* :func:`affine_image` - normalisation on a SimpleITK image, without a float64 numpy copy;
* :func:`crop_or_pad` / :func:`undo_crop_or_pad` / :func:`pad_to_multiple` - onto the model's grid and back;
* :func:`sliding_window_positions` / :func:`run_sliding_windows` - volumes larger than the model's window,
  blended with MONAI's gaussian weights, with per-window progress and cancellation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .modalities import get_modality
from .models.base import CancelFn, ProgressFn, check_cancel

BODY_HU_THRESHOLD = -500.0
# MR: the body threshold is Otsu's, but never above this fraction of the robust maximum (bright CSF or fat
# would otherwise pull Otsu above soft tissue).
MR_BODY_FRACTION = 0.1
MR_ROBUST_PERCENTILE = 99.5
# Voxels per slab of the slab-wise steps (bounded temporaries for any volume).
SLAB_VOXELS = 2**22
_CROSS = ndimage.generate_binary_structure(3, 1)
_IN_PLANE = np.stack([np.zeros((3, 3), bool), ndimage.generate_binary_structure(2, 1), np.zeros((3, 3), bool)])


def body_mask(image: sitk.Image, modality: str) -> sitk.Image:
    """The body: threshold, largest connected component, a small closing, holes filled (3D and per axial slice).

    Args:
        image: 3D scalar image.
        modality: registry key (``"CT"``, ``"MR_T1"`` ...) or the DICOM ``"MR"``; CT-like images are
            thresholded at -500 HU, MR at ``min(Otsu, 0.1 * 99.5th percentile)``.

    Returns:
        ``sitkUInt8`` mask (1 = body) on the image's grid; all zero when nothing passes the threshold.
    """
    is_ct = modality != "MR" and get_modality(modality).is_ct
    array = sitk.GetArrayViewFromImage(image)
    threshold = BODY_HU_THRESHOLD if is_ct else _mr_threshold(image, array)
    # Full-volume temporaries are dropped as soon as possible: the memory guard counts on a few bytes per voxel.
    mask = sitk.GetImageFromArray((array > threshold).view(np.uint8))
    if not sitk.GetArrayViewFromImage(mask).any():
        mask.CopyInformation(image)
        return mask
    # Largest component first, so closing cannot glue the couch or noise onto the body.
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    del mask
    largest = sitk.GetArrayViewFromImage(labels) == 1
    del labels
    # Padded so that the erosion half of the closing does not eat a body cut by the volume's border.
    closed = ndimage.binary_closing(np.pad(largest, 1), structure=_CROSS)[1:-1, 1:-1, 1:-1]
    del largest
    # Per axial slice as well: airways open at the volume's top or bottom are holes only within a slice.
    filled = _fill_holes(_fill_holes(closed, in_plane=False), in_plane=True)
    del closed
    out = sitk.GetImageFromArray(filled.view(np.uint8))
    out.CopyInformation(image)
    return out


def _fill_holes(mask: np.ndarray, *, in_plane: bool) -> np.ndarray:
    """Fill background regions that do not touch the border (of the volume, or of each z slice)."""
    structure = _IN_PLANE if in_plane else _CROSS
    background, count = ndimage.label(~mask, structure=structure)
    faces = [background[:, [0, -1]], background[:, :, [0, -1]]]
    if not in_plane:
        faces.append(background[[0, -1]])
    outside = np.zeros(count + 1, dtype=bool)
    for face in faces:
        outside[face.ravel()] = True
    outside[0] = False  # the mask itself
    # A lookup per slab: indexing with the whole label volume would make an 8-byte index copy of it.
    filled = np.empty(mask.shape, dtype=bool)
    step = max(1, SLAB_VOXELS // max(1, mask[0].size))
    for z in range(0, mask.shape[0], step):
        np.logical_not(outside[background[z : z + step]], out=filled[z : z + step])
    return filled


def _mr_threshold(image: sitk.Image, array: np.ndarray) -> float:
    positive = array[array > 0]
    if positive.size == 0:
        return 0.0
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.Execute(sitk.Shrink(image, [2] * image.GetDimension()))  # a histogram needs no full resolution
    return min(otsu.GetThreshold(), MR_BODY_FRACTION * float(np.percentile(positive, MR_ROBUST_PERCENTILE)))


def resampled_size(
    size: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float] | None
) -> tuple[int, ...]:
    """The size :func:`resample_to_spacing` gives: ``round(size * spacing / new_spacing)`` per axis, at least 1.

    Args:
        size: ``(x, y, z)`` voxels; spacing: their ``(x, y, z)`` spacing in mm.
        new_spacing: the target spacing, or ``None`` for "unchanged".
    """
    if new_spacing is None:
        return tuple(int(n) for n in size)
    return tuple(max(1, round(n * old / new)) for n, old, new in zip(size, spacing, new_spacing))


def resample_to_spacing(
    image: sitk.Image,
    spacing: Sequence[float] | None,
    *,
    interpolator: int = sitk.sitkLinear,
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample onto a grid of ``spacing`` with the same origin, direction and (to a voxel) physical extent.

    The new grid starts at the first voxel centre, so where its last voxels reach past the source's last voxel
    centre they take the border value (nearest-neighbour extrapolation), never a constant: a constant there is
    a fake edge (an air slab after a body that fills the volume) that a network would see.

    Args:
        image: 3D image.
        spacing: ``(x, y, z)`` in mm; ``None`` (or the image's own spacing) returns ``image`` unchanged.
        interpolator: SimpleITK interpolator (``sitkNearestNeighbor`` for masks).
        default_value: value of points outside the image; border extrapolation leaves none on this grid.

    Returns:
        the resampled image, same pixel type, of :func:`resampled_size`.
    """
    if spacing is None:
        return image
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != image.GetDimension() or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be {image.GetDimension()} positive numbers, got {spacing}")
    if np.allclose(spacing, image.GetSpacing(), rtol=0, atol=1e-9):
        return image
    size = resampled_size(image.GetSize(), image.GetSpacing(), spacing)
    return sitk.Resample(
        image,
        size,
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        spacing,
        image.GetDirection(),
        default_value,
        image.GetPixelID(),
        True,  # useNearestNeighborExtrapolator
    )


def resample_like(
    image: sitk.Image,
    reference: sitk.Image,
    *,
    interpolator: int = sitk.sitkLinear,
    default_value: float,
    extrapolate: bool = False,
) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (identity transform): the inverse of :func:`resample_to_spacing`.

    Args:
        image: the image to resample.
        reference: the grid (size, spacing, origin, direction) to resample onto.
        interpolator: SimpleITK interpolator.
        default_value: value of points outside ``image`` (without ``extrapolate``).
        extrapolate: give points outside ``image`` its nearest border value instead of ``default_value``: the
            way back from a model grid, whose last voxel centre may stop short of the source's.

    Returns:
        an image with ``reference``'s size, spacing, origin and direction and ``image``'s pixel type.
    """
    return sitk.Resample(
        image, reference, sitk.Transform(), interpolator, default_value, image.GetPixelID(), extrapolate
    )


def affine_image(image: sitk.Image, function: Callable[[np.ndarray], np.ndarray]) -> sitk.Image:
    """Apply an affine intensity map (``normalise`` / ``denormalise`` with bound parameters) without a numpy copy.

    Args:
        image: scalar image (float32 stays float32).
        function: an affine map of arrays, e.g. ``lambda a: normalise(a, params)``.

    Returns:
        a new image of the same pixel type; SimpleITK computes ``(x + shift) * scale`` in double precision.
    """
    at_zero, at_one = (float(v) for v in function(np.array([0.0, 1.0])))
    scale = at_one - at_zero
    if scale == 0 or not np.isfinite(scale):
        raise ValueError(f"not an invertible affine map (scale {scale})")
    return sitk.ShiftScale(image, at_zero / scale, scale)


@dataclass(frozen=True)
class CropPad:
    """What :func:`crop_or_pad` did to each of the last ``len(crop)`` axes, so that undo is exact.

    Args:
        original_shape: the spatial shape before.
        crop: ``(before, after)`` voxels removed per axis.
        pad: ``(before, after)`` voxels added per axis (after cropping).
    """

    original_shape: tuple[int, ...]
    crop: tuple[tuple[int, int], ...]
    pad: tuple[tuple[int, int], ...]


def crop_or_pad(array: np.ndarray, shape: Sequence[int], *, pad_value: float) -> tuple[np.ndarray, CropPad]:
    """Centre-crop or pad the last ``len(shape)`` axes of ``array`` to ``shape``.

    Args:
        array: ``(..., Z, Y, X)`` array.
        shape: target ``(Z, Y, X)`` (any number of trailing axes).
        pad_value: value of added voxels.

    Returns:
        the ``(..., *shape)`` array and the :class:`CropPad` record for :func:`undo_crop_or_pad`.
    """
    lead = array.ndim - len(shape)
    if lead < 0 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape {tuple(shape)} must be positive and have at most {array.ndim} axes")
    spatial = array.shape[lead:]
    crop = tuple(_split(max(n - int(s), 0)) for n, s in zip(spatial, shape))
    pad = tuple(_split(max(int(s) - n, 0)) for n, s in zip(spatial, shape))
    kept = array[(Ellipsis, *(slice(b, n - a) for (b, a), n in zip(crop, spatial)))]
    out = np.pad(kept, ((0, 0),) * lead + pad, constant_values=pad_value) if any(map(any, pad)) else kept
    return out, CropPad(tuple(spatial), crop, pad)


def undo_crop_or_pad(array: np.ndarray, info: CropPad, *, pad_value: float) -> np.ndarray:
    """The exact inverse of :func:`crop_or_pad` on the kept region; cropped-away voxels become ``pad_value``.

    Args:
        array: ``(..., *shape)`` array as returned by :func:`crop_or_pad` (or a model output of that shape).
        info: the record :func:`crop_or_pad` returned.
        pad_value: value of the voxels that were cropped away.

    Returns:
        ``(..., *info.original_shape)`` array.
    """
    lead = array.ndim - len(info.pad)
    spatial = array.shape[lead:]
    kept = array[(Ellipsis, *(slice(b, n - a) for (b, a), n in zip(info.pad, spatial)))]
    if not any(map(any, info.crop)):
        return kept
    return np.pad(kept, ((0, 0),) * lead + info.crop, constant_values=pad_value)


def pad_to_multiple(
    array: np.ndarray, multiple: int | Sequence[int], *, pad_value: float
) -> tuple[np.ndarray, CropPad]:
    """Pad (centred) the spatial axes up to multiples of ``multiple``, e.g. for a network that halves them.

    Args:
        array: ``(..., Z, Y, X)`` array.
        multiple: one value for the last three axes, or one per trailing axis.
        pad_value: value of added voxels.

    Returns:
        the padded array and the :class:`CropPad` record for :func:`undo_crop_or_pad`.
    """
    multiples = (int(multiple),) * min(3, array.ndim) if np.ndim(multiple) == 0 else tuple(multiple)
    if any(m < 1 for m in multiples):
        raise ValueError(f"multiple must be positive, got {multiple}")
    spatial = array.shape[array.ndim - len(multiples) :]
    shape = tuple(-(-n // m) * m for n, m in zip(spatial, multiples))
    return crop_or_pad(array, shape, pad_value=pad_value)


def _split(total: int) -> tuple[int, int]:
    return total // 2, total - total // 2


def sliding_window_positions(
    shape: Sequence[int], window: Sequence[int], overlap: float = 0.25
) -> list[tuple[slice, ...]]:
    """The windows :func:`run_sliding_windows` visits (MONAI's scan), for a volume padded up to ``window``.

    Args:
        shape: spatial ``(Z, Y, X)`` of the volume.
        window: spatial window size.
        overlap: fraction of the window shared by neighbours, in ``[0, 1)``.

    Returns:
        one tuple of slices per window; together they cover ``max(shape, window)``, and each lies inside the
        volume along every axis where the volume is at least as large as the window.
    """
    if len(shape) != len(window) or any(w < 1 for w in window):
        raise ValueError(f"window {tuple(window)} must be positive and match shape {tuple(shape)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    from monai.data.utils import dense_patch_slices  # MONAI is heavy to import; only window runs need it

    size = tuple(max(n, w) for n, w in zip(shape, window))
    interval = tuple(w if w == n else max(int(w * (1 - overlap)), 1) for n, w in zip(size, window))
    return list(dense_patch_slices(size, window, interval))


def run_sliding_windows(
    volume: torch.Tensor,
    window: Sequence[int],
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    overlap: float = 0.25,
    mode: str = "gaussian",
    pad_value: float = -1.0,
    window_device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> torch.Tensor:
    """Apply ``fn`` window by window and blend the results (MONAI's ``sliding_window_inference``).

    A volume smaller than the window is padded with ``pad_value`` (centred) and the result cropped back.

    Args:
        volume: ``(B, C, Z, Y, X)`` input.
        window: ``(Z, Y, X)`` window size.
        fn: maps a ``(1, C, *window)`` window to a ``(1, C', *window)`` output.
        overlap: fraction of the window shared by neighbours, in ``[0, 1)``.
        mode: ``"gaussian"`` (centre-weighted) or ``"constant"`` blending.
        pad_value: fill for volumes smaller than the window (``-1`` is background in normalised units).
        window_device: where windows are sent to ``fn`` (e.g. CUDA while ``volume`` stays on the CPU).
        progress: called with the fraction of windows done after each window.
        cancel: polled before each window; when it returns True, ``CancelledError`` is raised.

    Returns:
        ``(B, C', Z, Y, X)`` blended output on ``volume``'s device.
    """
    if volume.ndim != 5 or len(window) != 3:
        raise ValueError(f"volume must be (B, C, Z, Y, X) and window 3 sizes; got {tuple(volume.shape)}, {window}")
    if volume.shape[0] == 1 and tuple(volume.shape[2:]) == tuple(window):
        # One window that is the whole volume: blending would only divide its weights out again, at the cost of
        # three more whole-volume buffers (MONAI's output, weights and the window's weighted copy).
        check_cancel(cancel)
        out = fn(volume if window_device is None else volume.to(window_device)).to(volume.device)
        if progress is not None:
            progress(1.0)
        return out
    total = volume.shape[0] * len(sliding_window_positions(volume.shape[2:], window, overlap))
    done = 0

    def counted(x: torch.Tensor) -> torch.Tensor:
        nonlocal done
        check_cancel(cancel)
        # MONAI hands in a view of the volume and weights the output in place: an fn returning its input
        # (or a view of it) would otherwise overwrite the caller's volume.
        out = fn(x.clone())
        done += 1
        if progress is not None:
            progress(done / total)
        return out

    from monai.inferers import sliding_window_inference

    return sliding_window_inference(
        volume,
        tuple(window),
        1,
        counted,
        overlap=overlap,
        mode=mode,
        cval=pad_value,
        sw_device=window_device,
        device=volume.device,
    )
