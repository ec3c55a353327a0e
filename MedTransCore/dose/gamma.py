"""3D gamma index of a synthetic-CT dose against the CT dose (``pymedphys.gamma``).

The gamma index (Low et al. 1998) of a reference voxel is the smallest combined distance, over the evaluated dose
distribution, ``sqrt((dose difference / dose criterion)^2 + (distance / distance criterion)^2)``; the voxel passes
when gamma <= 1. As in the SynthRAD challenge dose evaluation it is computed here as a *global* gamma: the dose
criterion is a percentage of the maximum reference dose, and reference voxels below a low-dose threshold (10 % of
that maximum by default) are not evaluated (NaN in the map) and are left out of the pass rates.

The search itself is pymedphys's (``pymedphys.gamma``, the gamma shell of Wendling et al. 2007); this module only
turns two SimpleITK images on the same grid into its inputs and summarises the result.
"""

from __future__ import annotations

import numpy as np
import pymedphys
import SimpleITK as sitk

from ..errors import InputError

#: The (dose %, distance mm) criteria reported by :func:`gamma_pass_rates`.
CRITERIA: tuple[tuple[float, float], ...] = ((1.0, 1.0), (2.0, 2.0), (3.0, 3.0))

# pymedphys samples the evaluated dose every distance_mm / INTERP_FRACTION along its search shells. Its default
# (10) is the recommendation of Wendling et al.; 5 keeps a 64^3 volume at a few seconds per criterion.
INTERP_FRACTION = 5
# Geometry tolerance (mm) when checking that both images share one grid.
_GRID_ATOL = 1e-4


def _check_same_grid(reference: sitk.Image, evaluated: sitk.Image) -> None:
    """Raise ``InputError`` unless both images have the same size, spacing, origin and direction."""
    if reference.GetDimension() != 3 or evaluated.GetDimension() != 3:
        raise InputError(
            f"Gamma needs two 3D dose images; got {reference.GetDimension()}D and {evaluated.GetDimension()}D."
        )
    checks = (
        ("size", reference.GetSize(), evaluated.GetSize()),
        ("spacing", reference.GetSpacing(), evaluated.GetSpacing()),
        ("origin", reference.GetOrigin(), evaluated.GetOrigin()),
        ("direction", reference.GetDirection(), evaluated.GetDirection()),
    )
    for name, ref_value, eval_value in checks:
        if not np.allclose(ref_value, eval_value, rtol=0.0, atol=_GRID_ATOL):
            raise InputError(
                f"The two dose images are not on the same grid: {name} {tuple(ref_value)} (reference) vs "
                f"{tuple(eval_value)} (evaluated). Resample the evaluated dose onto the reference grid first "
                "(e.g. sitk.Resample(evaluated, reference))."
            )


def _axes_mm(image: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (mm) along each array axis, in array order ``(z, y, x)``.

    The axes run along the image's own index directions (origin + index * spacing): gamma only uses distances
    between voxels, which a (rotation) direction matrix does not change.
    """
    origin, spacing, size = image.GetOrigin(), image.GetSpacing(), image.GetSize()
    x, y, z = (origin[i] + spacing[i] * np.arange(size[i], dtype=np.float64) for i in range(3))
    return z, y, x


def gamma_index(
    reference: sitk.Image,
    evaluated: sitk.Image,
    dose_percent: float,
    distance_mm: float,
    *,
    cutoff_percent: float = 10.0,
    max_gamma: float = 2.0,
) -> np.ndarray:
    """Global 3D gamma of ``evaluated`` against ``reference`` for one criterion.

    Args:
        reference: reference dose (e.g. the dose computed on the CT), Gy, 3D.
        evaluated: evaluated dose (e.g. the dose computed on the synthetic CT) on the same grid as ``reference``.
        dose_percent: dose criterion in percent of the maximum reference dose (global gamma), e.g. ``2.0``.
        distance_mm: distance-to-agreement criterion in mm, e.g. ``2.0``.
        cutoff_percent: reference voxels below this percentage of the maximum reference dose are not evaluated.
        max_gamma: the search stops at ``max_gamma * distance_mm``; larger gamma values are reported as
            ``max_gamma``. Must be >= 1 so that the pass/fail decision (gamma <= 1) is exact.

    Returns:
        float32 array of shape ``(Z, Y, X)`` (that of ``sitk.GetArrayFromImage(reference)``), values in
        ``[0, max_gamma]``, NaN where the reference dose is below the cutoff.

    Raises:
        InputError: the images are not on the same grid, the reference dose has no positive value, a criterion
            is not positive, ``cutoff_percent`` is outside ``[0, 100)`` or ``max_gamma`` is below 1.
    """
    if dose_percent <= 0 or distance_mm <= 0:
        raise InputError(f"Gamma criteria must be positive; got {dose_percent:g}%/{distance_mm:g}mm.")
    if not 0 <= cutoff_percent < 100:
        raise InputError(f"cutoff_percent must be in [0, 100); got {cutoff_percent:g}.")
    if max_gamma < 1:
        raise InputError(f"max_gamma must be at least 1 (values above it are clipped to it); got {max_gamma:g}.")
    _check_same_grid(reference, evaluated)
    reference_dose = sitk.GetArrayFromImage(reference).astype(np.float64)
    evaluated_dose = sitk.GetArrayFromImage(evaluated).astype(np.float64)
    normalisation = float(np.max(reference_dose))
    if not normalisation > 0:
        raise InputError("The reference dose has no positive value; a global gamma needs a positive maximum dose.")

    axes = _axes_mm(reference)
    gamma = pymedphys.gamma(
        axes,
        reference_dose,
        axes,
        evaluated_dose,
        dose_percent_threshold=dose_percent,
        distance_mm_threshold=distance_mm,
        lower_percent_dose_cutoff=cutoff_percent,
        interp_fraction=INTERP_FRACTION,
        max_gamma=max_gamma,
        local_gamma=False,
        global_normalisation=normalisation,
        # pymedphys's own interpolator needs numba; scipy's RegularGridInterpolator gives the same linear
        # interpolation with only numpy/scipy installed.
        interp_algo="scipy",
    )
    return np.asarray(gamma, dtype=np.float32)


def gamma_pass_rates(
    reference: sitk.Image,
    evaluated: sitk.Image,
    criteria: tuple[tuple[float, float], ...] = CRITERIA,
    *,
    cutoff_percent: float = 10.0,
) -> tuple[dict[str, float], np.ndarray]:
    """Gamma pass rates of ``evaluated`` against ``reference`` for several criteria.

    Args:
        reference: reference dose (CT), 3D image.
        evaluated: evaluated dose (synthetic CT) on the same grid.
        criteria: ``(dose %, distance mm)`` pairs, by default 1%/1mm, 2%/2mm and 3%/3mm.
        cutoff_percent: low-dose threshold in percent of the maximum reference dose (see :func:`gamma_index`).

    Returns:
        ``(rates, gamma_map)``: ``rates`` maps ``"2%/2mm"``-style keys (``f"{d:g}%/{mm:g}mm"``) to the percentage
        (0-100) of evaluated voxels (non-NaN gamma) with gamma <= 1; ``gamma_map`` is the float32 ``(Z, Y, X)``
        gamma array of the 2%/2mm criterion, or of the middle criterion when 2%/2mm is not among ``criteria``.

    Raises:
        InputError: no criteria, or any error of :func:`gamma_index`.
    """
    if not criteria:
        raise InputError("gamma_pass_rates needs at least one (dose %, distance mm) criterion.")
    criteria = tuple((float(d), float(mm)) for d, mm in criteria)
    map_criterion = (2.0, 2.0) if (2.0, 2.0) in criteria else criteria[len(criteria) // 2]
    rates: dict[str, float] = {}
    gamma_map: np.ndarray | None = None
    for dose_percent, distance_mm in criteria:
        gamma = gamma_index(reference, evaluated, dose_percent, distance_mm, cutoff_percent=cutoff_percent)
        evaluated_voxels = gamma[~np.isnan(gamma)]
        # Never empty: the hottest reference voxel is always at or above a cutoff below 100 %.
        rate = 100.0 * np.count_nonzero(evaluated_voxels <= 1.0) / evaluated_voxels.size
        rates[f"{dose_percent:g}%/{distance_mm:g}mm"] = float(rate)
        if (dose_percent, distance_mm) == map_criterion:
            gamma_map = gamma
    assert gamma_map is not None
    return rates, gamma_map
