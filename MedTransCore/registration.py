"""Rigid registration of a reference scan onto a synthetic (or source) image, for evaluation.

Mattes mutual information works across modalities (MR onto CT, inverted contrasts), so the same call aligns a
planning CT with a synthetic CT or with the MR it came from. The setup is SimpleITK's classic multi-resolution
rigid one: geometric centring, then a regular-step gradient descent on an Euler transform whose parameter
scales come from physical shifts, at shrink factors 4, 2, 1 with 2, 1, 0 mm smoothing, with linear
interpolation and about 50 000 seeded random metric samples per level. Large volumes are registered on bin-shrunk
copies (at most 128^3 voxels); the final resampling uses the original moving image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .io.reading import error_line
from .metrics import grid_difference

SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS_MM = (2.0, 1.0, 0.0)
HISTOGRAM_BINS = 50
# Mattes MI needs some tens of thousands of samples for 50 bins; more only costs time.
METRIC_SAMPLES = 50_000
ITERATIONS_PER_LEVEL = 200
# Register bin-shrunk copies of at most this many voxels: ITK smooths the full-resolution moving image at every
# level, which costs minutes at 512^2 x 300, while a ~1.5-2 mm working grid still gives sub-millimetre alignment.
WORKING_VOXELS = 128**3
# The coarsest level shrinks by 4 and smooths, which ITK refuses below about 2 voxels per axis there (measured:
# 7^3 fails, 8^3 works); fewer voxels than this per axis cannot be registered, and rotations need some depth anyway.
MIN_VOXELS_PER_AXIS = 8


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_rigid`.

    Attributes:
        resampled: the moving image resampled (linearly) onto the fixed image's grid; outside its field of view
            it holds the moving image's minimum (e.g. -1024 HU for CT, 0 for MR). Float pixels stay as they are,
            integer ones become float32.
        transform: maps fixed-image points to moving-image points (SimpleITK's convention), rotating about the
            centre of the fixed image.
        info: ``rotation_deg`` (Euler angles about x, y, z), ``translation_mm`` (x, y, z), ``final_metric``
            (negative mutual information, lower is better), ``iterations`` (all levels), ``levels``,
            ``stop_condition`` (the optimiser's last words).
    """

    resampled: sitk.Image
    transform: sitk.Euler3DTransform
    info: dict = field(default_factory=dict)


def _check_volume(image: sitk.Image, name: str) -> None:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name} must be a scalar 3D image to register it")
    if min(image.GetSize()) < MIN_VOXELS_PER_AXIS:
        raise InputError(
            f"{name} is too small to register ({'x'.join(map(str, image.GetSize()))} voxels); rigid registration "
            f"needs at least {MIN_VOXELS_PER_AXIS} voxels along every axis"
        )


def _working_copy(image: sitk.Image) -> sitk.Image:
    """``image`` as float32, bin-shrunk (finest axis first) until it has at most WORKING_VOXELS voxels."""
    size, spacing = np.asarray(image.GetSize()), np.asarray(image.GetSpacing())
    factors = np.ones(3, dtype=int)
    while np.prod(size // factors) > WORKING_VOXELS:
        shrinkable = size // (factors + 1) >= MIN_VOXELS_PER_AXIS  # never below what can be registered
        if not shrinkable.any():
            break
        factors[np.argmin(np.where(shrinkable, spacing * factors, np.inf))] += 1
    image = sitk.Cast(image, sitk.sitkFloat32)
    return image if factors.max() == 1 else sitk.BinShrink(image, factors.tolist())


def _sampling_percentages(fixed: sitk.Image) -> list[float]:
    """Per-level fraction of fixed voxels to sample: about METRIC_SAMPLES each, all of them on small levels."""
    voxels = float(np.prod(fixed.GetSize()))
    return [min(1.0, METRIC_SAMPLES * shrink**3 / voxels) for shrink in SHRINK_FACTORS]


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    fixed_mask: sitk.Image | None = None,
    progress: Callable[[float], None] | None = None,
    seed: int = 0,
) -> RegistrationResult:
    """Rigidly align ``moving`` to ``fixed`` by mutual information and resample it onto ``fixed``'s grid.

    Args:
        fixed: image whose grid the result lives on (e.g. the synthetic CT).
        moving: image to align (e.g. the real reference CT, or an MR).
        fixed_mask: optional mask on ``fixed``'s grid restricting where the metric is sampled.
        progress: called with the fraction done in ``[0, 1]``.
        seed: seed of the random metric sampling (same inputs and seed give the same result).

    Returns:
        The resampled image, the transform and a summary (see :class:`RegistrationResult`).

    Raises:
        InputError: an image is not a scalar 3D volume or has fewer than ``MIN_VOXELS_PER_AXIS`` voxels along an
            axis, the mask is not on the fixed grid, or ITK cannot register the pair (its reason is given).
    """
    _check_volume(fixed, "the fixed image")
    _check_volume(moving, "the moving image")
    fixed_float, moving_float = _working_copy(fixed), _working_copy(moving)

    transform = sitk.Euler3DTransform(
        sitk.CenteredTransformInitializer(
            fixed_float, moving_float, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
        )
    )
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # SimpleITK reads seed 0 as "seed from the wall clock", so shift by one to keep every seed repeatable.
    method.SetMetricSamplingPercentagePerLevel(_sampling_percentages(fixed_float), seed + 1)
    if fixed_mask is not None:
        if (difference := grid_difference(fixed_mask, fixed)) is not None:
            raise InputError(f"the fixed mask is not on the fixed image's grid ({difference})")
        mask = sitk.Resample(
            sitk.Cast(fixed_mask != 0, sitk.sitkUInt8), fixed_float, sitk.Transform(), sitk.sitkNearestNeighbor
        )
        method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    # Steps are in mm of physical shift thanks to the scales: start at 2 mm, stop below 0.001 mm. A slow
    # relaxation (0.7) keeps the noisy sampled gradient from shrinking the step before rotations converge.
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=1e-3,
        numberOfIterations=ITERATIONS_PER_LEVEL,
        relaxationFactor=0.7,
        gradientMagnitudeTolerance=1e-6,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(SHRINK_FACTORS))
    method.SetSmoothingSigmasPerLevel(list(SMOOTHING_SIGMAS_MM))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(transform, inPlace=True)  # the optimiser updates ``transform``

    iterations = [0]

    def on_iteration() -> None:
        iterations[0] += 1
        if progress is not None:
            level = method.GetCurrentLevel() + method.GetOptimizerIteration() / ITERATIONS_PER_LEVEL
            progress(min(level / len(SHRINK_FACTORS), 1.0))

    method.AddCommand(sitk.sitkIterationEvent, on_iteration)
    # Repeatable: random sampling is seeded and one thread sums the metric in a fixed order.
    method.SetNumberOfThreads(1)
    try:
        method.Execute(fixed_float, moving_float)
    except RuntimeError as err:
        raise InputError(f"rigid registration failed: {error_line(err)}") from None

    resampled = sitk.Resample(
        moving,
        fixed,
        transform,
        sitk.sitkLinear,
        float(sitk.GetArrayViewFromImage(moving).min()),
        moving.GetPixelID() if moving.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64) else sitk.sitkFloat32,
    )
    if progress is not None:
        progress(1.0)
    info = {
        "rotation_deg": [
            math.degrees(a) for a in (transform.GetAngleX(), transform.GetAngleY(), transform.GetAngleZ())
        ],
        "translation_mm": list(transform.GetTranslation()),
        "final_metric": float(method.GetMetricValue()),
        "iterations": iterations[0],
        "levels": len(SHRINK_FACTORS),
        "stop_condition": method.GetOptimizerStopConditionDescription(),
    }
    return RegistrationResult(resampled=resampled, transform=transform, info=info)
