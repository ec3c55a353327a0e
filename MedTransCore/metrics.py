"""Image similarity between a synthetic volume and its reference, inside a mask (SynthRAD definitions).

Intensity scale of every metric:

* CT-like targets (modality kind ``"ct"``): Hounsfield units. ``MAE``, ``ME``, ``NMSE``, ``NCC`` and the
  per-tissue MAEs use the HU values as they are; ``PSNR``, ``SSIM`` and ``MS_SSIM`` clip both volumes to
  ``[-1024, 3000]`` HU and use the data range 4024 (SynthRAD 2023).
* MR targets: each volume is mapped to ``[0, 1]`` by its own robust range, ``0 -> 0`` and the 99.5th
  percentile inside the mask (positive voxels without a mask) ``-> 1``, then clipped (see
  :func:`to_metric_scale`); all metrics use that scale and the data range 1.

Definitions (``p`` prediction, ``r`` reference, sums and means over the mask):

* ``MAE = mean|p - r|``, ``ME = mean(p - r)``, ``NMSE = sum((p - r)^2) / sum(r^2)`` (NaN when ``r`` is 0 in
  the whole mask), ``NCC`` = Pearson correlation (NaN when either volume is constant in the mask).
* ``PSNR = 10 log10(range^2 / mean((p - r)^2))`` on the clipped volumes; identical volumes give ``inf``
  (not capped: ``inf`` is the honest value; the JSON writer of ``MedTransCore.report`` turns it into null).
* ``SSIM``: 3D SSIM with an 11-voxel Gaussian window (sigma 1.5, population covariance, ``K1=0.01``,
  ``K2=0.03``, as Wang et al. and ``skimage`` with ``gaussian_weights=True``). As in SynthRAD, voxels outside
  the mask are set to the low end of the range in both volumes, the SSIM map is computed on the whole image
  (reflecting at its borders) and averaged over the mask minus a 5-voxel image border (skimage's crop), or
  over the whole mask when the volume is too small for that border.
* ``MS_SSIM``: MONAI's 3D multi-scale SSIM (``monai.metrics.MultiScaleSSIMMetric``: valid Gaussian windows,
  2x average pooling, weights of Wang et al. 2003) on the bounding box of the mask, outside-mask voxels set to
  the low end of the range in both volumes like SSIM (they are identical there, so a loose mask raises the
  score a little). It is computed with separable filters (MONAI's dense 11^3 kernel needs ~8 s for a 128^3
  volume on one core) and the tests check it against MONAI. Small boxes use the largest configuration MONAI
  accepts: 5, 4 or 3 scales with the 11-voxel window, then 3 or 2 scales with 7 and 5-voxel windows (sigma
  scaled with the window, weights the first ones of the five, renormalised); NaN below 5 voxels a side.
* ``MAE_air``, ``MAE_soft_tissue``, ``MAE_bone`` (CT-like only): MAE over the mask voxels whose *reference*
  is air (< -200 HU), soft tissue (-200 to 200 HU) or bone (> 200 HU); NaN when the class is empty.
* ``SLICE_DIFF``: slice-to-slice consistency, the mean over successive axial slices of ``|e(z + 1) - e(z)|``
  with ``e = p - r``, over the voxels inside the mask in both slices (HU for CT, the [0, 1] scale for MR; NaN
  without such voxels). An error that changes from slice to slice (flicker of a slice-wise model) raises it;
  an error shared by neighbouring slices (a smooth bias) does not.
* ``voxels``: number of mask voxels; ``volume_ml`` when ``spacing`` is given.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import InputError
from .modalities import CT_WINDOW_HU, get_modality, normalisation_params, normalise

METRIC_NAMES = ("MAE", "ME", "PSNR", "SSIM", "MS_SSIM", "NMSE", "NCC", "SLICE_DIFF")
#: Tissue classes of CT-like references in HU, ``(low, high)``: air ``r < -200``, soft tissue
#: ``-200 <= r <= 200``, bone ``r > 200``.
CT_TISSUE_CLASSES: dict[str, tuple[float, float]] = {
    "air": (-math.inf, -200.0),
    "soft_tissue": (-200.0, 200.0),
    "bone": (200.0, math.inf),
}
CT_METRIC_NAMES = METRIC_NAMES + tuple(f"MAE_{name}" for name in CT_TISSUE_CLASSES)

SSIM_SIGMA = 1.5
SSIM_RADIUS = 5  # 11-voxel window: skimage's int(3.5 * 1.5 + 0.5), MONAI's kernel_size 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
# (scales, kernel size), best first; the first one a box allows is used.
MS_SSIM_CONFIGS = ((5, 11), (4, 11), (3, 11), (3, 7), (2, 7), (2, 5))
# Grids whose spacing/origin differ by less than this (mm) or direction cosines by less than this are equal.
GRID_TOLERANCE = 1e-3


def metric_unit(name: str, modality: str) -> str:
    """Unit of metric ``name`` for a ``modality`` target: ``"HU"``, ``"norm."`` (MR [0, 1] scale), ``"dB"``, ``"mL"`` or ``""``."""
    if name == "PSNR":
        return "dB"
    if name == "volume_ml":
        return "mL"
    if name in ("MAE", "ME", "SLICE_DIFF") or name.startswith("MAE_"):
        return "HU" if get_modality(modality).is_ct else "norm."
    return ""


def to_metric_scale(array: np.ndarray, modality: str, mask: np.ndarray | None = None) -> np.ndarray:
    """Intensities on the scale the metrics use: HU for CT-like modalities, ``[0, 1]`` for MR.

    Args:
        array: volume ``(Z, Y, X)``.
        modality: registry key.
        mask: optional boolean ``(Z, Y, X)`` mask for the MR percentile.

    Returns:
        float64 array ``(Z, Y, X)``.
    """
    array = np.asarray(array, dtype=np.float64)
    if get_modality(modality).is_ct:
        return array
    # normalise() maps 0 -> -1 and the 99.5th percentile -> 1; the metrics want [0, 1].
    params = normalisation_params(array, modality, mask)
    return np.clip((normalise(array, params) + 1.0) / 2.0, 0.0, 1.0)


def difference_map(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Signed difference ``prediction - reference`` as float32, same shape."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise InputError(f"prediction {prediction.shape} and reference {reference.shape} have different shapes")
    return (prediction.astype(np.float64) - reference.astype(np.float64)).astype(np.float32)


def _checked_inputs(
    prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 volumes and a boolean mask (``None`` stays ``None``), or an InputError saying what is wrong."""
    prediction = np.asarray(prediction, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if prediction.ndim != 3 or prediction.shape != reference.shape:
        raise InputError(
            f"prediction {prediction.shape} and reference {reference.shape} must be 3D volumes of the same shape"
        )
    for name, array in (("prediction", prediction), ("reference", reference)):
        if not np.isfinite(array).all():
            raise InputError(f"{name} contains NaN or infinite values")
    if mask is None:
        return prediction, reference, None
    mask = np.asarray(mask)
    if mask.shape != prediction.shape:
        raise InputError(f"mask {mask.shape} and images {prediction.shape} have different shapes")
    mask = mask > 0
    if not mask.any():
        raise InputError("the mask is empty: no voxel to evaluate")
    return prediction, reference, mask


def _ssim_maps(
    x: np.ndarray, y: np.ndarray, data_range: float, sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS
) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel SSIM and contrast-structure maps, same shape as ``x`` (borders reflected)."""
    smooth = partial(ndimage.gaussian_filter, sigma=sigma, radius=radius, mode="reflect")
    mu_x, mu_y = smooth(x), smooth(y)
    var_x = smooth(x * x) - mu_x * mu_x
    var_y = smooth(y * y) - mu_y * mu_y
    cov = smooth(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    ssim = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1) * cs
    return ssim, cs


def _box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels, clipped to the array."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(hits[0] - margin, 0), min(hits[-1] + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _masked_ssim(x: np.ndarray, y: np.ndarray, mask: np.ndarray, data_range: float) -> float:
    """Mean SSIM over ``mask`` (minus the image border) of volumes already filled outside the mask.

    Only the mask's bounding box plus the window radius is filtered: outside the mask both volumes hold one
    constant, so reflecting at that box gives the same values as filtering the whole image.
    """
    box = _box(mask, margin=SSIM_RADIUS)
    ssim, _ = _ssim_maps(x[box], y[box], data_range)
    interior = np.zeros(mask.shape, dtype=bool)
    if min(mask.shape) > 2 * SSIM_RADIUS:
        interior[tuple(slice(SSIM_RADIUS, -SSIM_RADIUS) for _ in mask.shape)] = True
    region = (mask & interior)[box]
    if not region.any():
        region = mask[box]
    return float(ssim[region].mean())


def ms_ssim_config(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """``(scales, kernel_size)`` of MS-SSIM for a box of ``shape``: the largest MONAI accepts, else ``None``."""
    size = min(shape)
    for scales, kernel in MS_SSIM_CONFIGS:
        monai_ok = size // max(1, scales - 1) ** 2 > kernel - 1  # MONAI's own size check
        if monai_ok and size // 2 ** (scales - 1) >= kernel:
            return scales, kernel
    return None


def _ms_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """MONAI's 3D MS-SSIM of two volumes (NaN when too small), with separable Gaussian filters."""
    config = ms_ssim_config(x.shape)
    if config is None:
        return math.nan
    scales, kernel = config
    radius = kernel // 2
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales]) / sum(MS_SSIM_WEIGHTS[:scales])
    valid = (slice(radius, -radius),) * 3  # MONAI convolves without padding
    factors = []
    for scale in range(scales):
        ssim, cs = _ssim_maps(x, y, data_range, sigma=SSIM_SIGMA * kernel / 11.0, radius=radius)
        factors.append(max(float((ssim if scale == scales - 1 else cs)[valid].mean()), 0.0))
        # 2x2x2 average pooling that drops an odd last voxel, like torch's avg_pool3d(kernel_size=2)
        z, yy, xx = (n // 2 for n in x.shape)
        x, y = (a[: 2 * z, : 2 * yy, : 2 * xx].reshape(z, 2, yy, 2, xx, 2).mean(axis=(1, 3, 5)) for a in (x, y))
    return float(np.prod(np.asarray(factors) ** weights))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b) / denominator) if denominator > 0 else math.nan


def _slice_difference(error: np.ndarray, mask: np.ndarray) -> float:
    """Mean ``|error(z + 1) - error(z)|`` over voxels in the mask in both slices (NaN when there are none)."""
    both = mask[1:] & mask[:-1]
    return float(np.abs(error[1:] - error[:-1])[both].mean()) if both.any() else math.nan


def compute_metrics(
    prediction: np.ndarray,
    reference: np.ndarray,
    modality: str,
    mask: np.ndarray | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> dict[str, float]:
    """Similarity of ``prediction`` to ``reference`` inside ``mask`` (definitions in the module docstring).

    Args:
        prediction: synthetic volume ``(Z, Y, X)`` in the target modality's unit.
        reference: real volume ``(Z, Y, X)`` of the target modality on the same grid.
        modality: registry key of the target modality (its kind picks HU or the MR [0, 1] scale).
        mask: optional ``(Z, Y, X)`` mask (non-zero = evaluate); ``None`` evaluates every voxel.
        spacing: optional voxel size ``(x, y, z)`` in mm, adds ``volume_ml``.

    Returns:
        ``MAE``, ``ME``, ``PSNR``, ``SSIM``, ``MS_SSIM``, ``NMSE``, ``NCC``, ``SLICE_DIFF``, ``voxels`` (+ ``MAE_air``,
        ``MAE_soft_tissue``, ``MAE_bone`` for CT-like targets, + ``volume_ml``) as Python floats.

    Raises:
        InputError: different shapes, not 3D, non-finite values, or an empty mask.
    """
    is_ct = get_modality(modality).is_ct
    prediction, reference, mask = _checked_inputs(prediction, reference, mask)
    p = to_metric_scale(prediction, modality, mask)
    r = to_metric_scale(reference, modality, mask)
    if mask is None:
        mask = np.ones(p.shape, dtype=bool)
    low, high = CT_WINDOW_HU if is_ct else (0.0, 1.0)
    data_range = high - low

    p_in, r_in = p[mask], r[mask]
    error = p_in - r_in
    squared = float(np.dot(error, error))
    reference_energy = float(np.dot(r_in, r_in))
    clipped_error = np.clip(p_in, low, high) - np.clip(r_in, low, high)
    mse = float(np.dot(clipped_error, clipped_error)) / error.size
    metrics = {
        "MAE": float(np.abs(error).mean()),
        "ME": float(error.mean()),
        "PSNR": 10.0 * math.log10(data_range**2 / mse) if mse > 0 else math.inf,
        "NMSE": squared / reference_energy if reference_energy > 0 else math.nan,
        "NCC": _pearson(p_in, r_in),
        "SLICE_DIFF": _slice_difference(p - r, mask),
    }

    # SynthRAD: clip, set outside-mask voxels to the low end, shift to non-negative values.
    p_filled, r_filled = (np.where(mask, np.clip(a, low, high), low) - low for a in (p, r))
    metrics["SSIM"] = _masked_ssim(p_filled, r_filled, mask, data_range)
    box = _box(mask)
    metrics["MS_SSIM"] = _ms_ssim(p_filled[box], r_filled[box], data_range)

    if is_ct:
        air, bone = r_in < CT_TISSUE_CLASSES["air"][1], r_in > CT_TISSUE_CLASSES["bone"][0]
        for name, selected in (("air", air), ("soft_tissue", ~air & ~bone), ("bone", bone)):
            metrics[f"MAE_{name}"] = float(np.abs(error[selected]).mean()) if selected.any() else math.nan
    metrics["voxels"] = float(error.size)
    if spacing is not None:
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers (x, y, z) in mm, got {spacing}")
        metrics["volume_ml"] = error.size * float(np.prod(spacing)) / 1000.0
    return metrics


def grid_difference(image: sitk.Image, other: sitk.Image) -> str | None:
    """How the grids of two images differ (size, spacing, origin or direction), or ``None`` when they match."""
    if image.GetSize() != other.GetSize():
        return f"size {image.GetSize()} vs {other.GetSize()}"
    for name in ("Spacing", "Origin", "Direction"):
        a, b = (np.asarray(getattr(im, f"Get{name}")()) for im in (image, other))
        if not np.allclose(a, b, rtol=0.0, atol=GRID_TOLERANCE):
            fmt = partial(np.array2string, precision=3, separator=", ")
            return f"{name.lower()} {fmt(a)} vs {fmt(b)}"
    return None


def evaluate_images(
    prediction: sitk.Image, reference: sitk.Image, modality: str, mask: sitk.Image | None = None
) -> dict[str, float]:
    """:func:`compute_metrics` on SimpleITK images that share one grid.

    Args:
        prediction: synthetic image (scalar).
        reference: real image of the target modality on the same grid.
        modality: registry key of the target modality.
        mask: optional mask on the same grid (non-zero = evaluate).

    Raises:
        InputError: the grids differ (the message says how and suggests ``--register rigid``), or the images
            are not scalar volumes.
    """
    difference = grid_difference(prediction, reference)
    if difference is not None:
        raise InputError(
            f"prediction and reference are on different grids ({difference}); "
            "pass --register rigid to align the reference first"
        )
    if mask is not None and (difference := grid_difference(mask, reference)) is not None:
        raise InputError(
            f"mask and reference are on different grids ({difference}); resample the mask onto the reference grid"
        )
    arrays = []
    for name, image in (("prediction", prediction), ("reference", reference), ("mask", mask)):
        if image is not None and image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected 1")
        arrays.append(None if image is None else sitk.GetArrayViewFromImage(image))
    return compute_metrics(*arrays[:2], modality, mask=arrays[2], spacing=reference.GetSpacing())


def reference_body_mask(reference: sitk.Image, modality: str) -> np.ndarray:
    """The voxels front ends score by default: the body in the reference (as SynthRAD scores inside a body mask).

    Returns:
        ``(Z, Y, X)`` boolean array; the whole volume when no body is found.
    """
    from .preprocess import body_mask

    mask = sitk.GetArrayFromImage(body_mask(reference, modality)).astype(bool)
    return mask if mask.any() else np.ones_like(mask)


#: Percentiles inside the brain that map a volume to [0, 1] in :func:`brain_mr_metrics` (then clipped).
BRAIN_SCALE_PERCENTILES = (0.5, 99.5)


def brain_mr_scale(volume: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``volume`` mapped to ``[0, 1]`` by its 0.5th and 99.5th percentiles inside ``brain``, clipped, 0 outside."""
    low, high = np.percentile(volume[brain], BRAIN_SCALE_PERCENTILES)
    scaled = np.clip((volume.astype(np.float64) - low) / max(high - low, 1e-12), 0.0, 1.0)
    scaled[~brain] = 0.0
    return scaled


def brain_mr_metrics(prediction: np.ndarray, reference: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """The brain-MR synthesis metrics of BraSyn-style evaluations, whole-volume and in the brain.

    Both volumes are scaled by :func:`brain_mr_scale` (their own 0.5th/99.5th percentiles inside the brain, clipped,
    0 outside), data range 1. ``*_whole`` averages over the full grid (background included, as BraTS reports
    it); ``*_brain`` over brain voxels only. SSIM is the 3D Gaussian SSIM of :func:`compute_metrics` (11 voxels,
    sigma 1.5), its map averaged over the grid or over the brain.

    Args:
        prediction, reference: ``(Z, Y, X)`` intensities on one grid.
        brain: ``(Z, Y, X)`` bool brain mask (non-empty).

    Returns:
        ``MAE_whole``, ``PSNR_whole``, ``SSIM_whole``, ``MAE_brain``, ``PSNR_brain``, ``SSIM_brain``.
    """
    brain = np.asarray(brain, dtype=bool)
    if prediction.shape != reference.shape or brain.shape != reference.shape:
        raise InputError(f"shapes differ: {prediction.shape}, {reference.shape}, mask {brain.shape}")
    if not brain.any():
        raise InputError("the brain mask is empty: no voxel to evaluate")
    p, r = brain_mr_scale(prediction, brain), brain_mr_scale(reference, brain)
    error = p - r
    ssim, _ = _ssim_maps(p, r, 1.0)

    def psnr(mse: float) -> float:
        return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)

    return {
        "MAE_whole": float(np.abs(error).mean()),
        "PSNR_whole": psnr(float((error**2).mean())),
        "SSIM_whole": float(ssim.mean()),
        "MAE_brain": float(np.abs(error[brain]).mean()),
        "PSNR_brain": psnr(float((error[brain] ** 2).mean())),
        "SSIM_brain": float(ssim[brain].mean()),
    }


def checkerboard_ratio(volume: np.ndarray, mask: np.ndarray, period: int = 2, tile: int = 64) -> float:
    """How strongly a grid of ``period`` voxels stands out of an image's in-plane power spectrum.

    Transposed convolutions leave a grid of period 2 (and, magnified by the layers above, 4) on smooth regions. On
    every axial slice whose mask covers at least a ``tile`` x ``tile`` area, a tile at the mask's centre is
    Fourier-transformed; the power summed over slices at the grid's three frequencies (along x, along y, diagonal) is
    divided by the power at their neighbours. Natural images give about 1; a visible grid several times that.

    Args:
        volume: ``(Z, Y, X)`` intensities.
        mask: ``(Z, Y, X)`` bool: where the tiles are centred (e.g. the brain).
        period: the grid's period in voxels (even, at most ``tile``).
        tile: the side of the analysed square.

    Raises:
        InputError: mismatched shapes, a bad period, or no slice with enough mask.
    """
    if volume.shape != mask.shape or volume.ndim != 3:
        raise InputError(f"volume and mask must be one (Z, Y, X) shape, got {volume.shape} and {mask.shape}")
    if period < 2 or period % 2 or tile % period or period > tile:
        raise InputError(f"period must be even and divide tile ({tile}), got {period}")
    if min(volume.shape[1:]) < tile:
        raise InputError(f"slices of {volume.shape[1:]} are smaller than the {tile}-voxel tile")
    k = tile // period
    power = np.zeros((tile, tile))
    slices = 0
    for z in range(volume.shape[0]):
        if mask[z].sum() < tile * tile:
            continue
        ys, xs = np.nonzero(mask[z])
        y0 = int(np.clip(round(ys.mean()) - tile // 2, 0, volume.shape[1] - tile))
        x0 = int(np.clip(round(xs.mean()) - tile // 2, 0, volume.shape[2] - tile))
        window = volume[z, y0 : y0 + tile, x0 : x0 + tile].astype(np.float64)
        power += np.abs(np.fft.fft2(window - window.mean())) ** 2
        slices += 1
    if not slices:
        raise InputError(f"no axial slice has a mask of at least {tile}x{tile} voxels")
    peaks = power[0, k] + power[k, 0] + power[k, k]
    neighbours = (
        power[0, k - 1] + power[0, (k + 1) % tile] + power[k - 1, 0] + power[(k + 1) % tile, 0]
        + power[k - 1, k] + power[(k + 1) % tile, k]
    ) / 2  # fmt: skip
    return float(peaks / max(neighbours, 1e-12))
