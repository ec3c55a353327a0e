"""Dose-volume histograms (DVH) and DVH metrics of a structure, and their CT vs synthetic-CT comparison.

Definitions (doses in Gy, over the voxels of a structure's mask, every voxel weighing the same):

* ``Dx`` (``D98``, ``D95``, ``D50``, ``D2``): the minimum dose received by the hottest ``x`` % of the structure,
  i.e. the ``(100 - x)``-th percentile of the dose inside the mask, with numpy's ``"linear"`` percentile
  (interpolating between the two nearest sorted voxel doses). So ``D98 <= D95 <= D50 <= D2``.
* ``Dmean``: the mean dose inside the mask.
* Cumulative DVH: for each dose level ``d``, the percentage of the structure's voxels receiving at least ``d``.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

DVH_METRICS = ("D98", "D95", "D50", "D2", "Dmean")
#: Number of dose levels of the default DVH curve (from 0 to the maximum dose in the structure).
DEFAULT_DVH_BINS = 200


def _dose_in_mask(dose: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The doses of the mask's voxels as a flat float64 array; ``InputError`` on a shape mismatch or empty mask."""
    dose = np.asarray(dose)
    mask = np.asarray(mask)
    if dose.shape != mask.shape:
        raise InputError(f"The dose {dose.shape} and the structure mask {mask.shape} must have the same shape.")
    values = dose[mask.astype(bool)].astype(np.float64)
    if values.size == 0:
        raise InputError("The structure mask is empty: a DVH needs at least one voxel.")
    return values


def dvh_metrics(dose: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """DVH metrics of one structure.

    ``Dx`` is the ``(100 - x)``-th percentile of the dose inside the mask with ``np.percentile(...,
    method="linear")``; ``Dmean`` is the mean dose inside the mask (see the module docstring).

    Args:
        dose: dose array, Gy, any shape (e.g. ``(Z, Y, X)``).
        mask: structure mask of the same shape; nonzero voxels belong to the structure.

    Returns:
        ``{"D98": ..., "D95": ..., "D50": ..., "D2": ..., "Dmean": ...}`` as plain Python floats (Gy).

    Raises:
        InputError: the shapes differ or the mask is empty.
    """
    values = _dose_in_mask(dose, mask)
    metrics: dict[str, float] = {}
    for name in DVH_METRICS:
        if name == "Dmean":
            metrics[name] = float(np.mean(values))
        else:
            volume_percent = float(name[1:])
            metrics[name] = float(np.percentile(values, 100.0 - volume_percent, method="linear"))
    return metrics


def dvh_curve(dose: np.ndarray, mask: np.ndarray, bins: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative DVH of one structure.

    Args:
        dose: dose array, Gy, any shape (e.g. ``(Z, Y, X)``).
        mask: structure mask of the same shape; nonzero voxels belong to the structure.
        bins: dose levels (Gy), 1D of shape ``(B,)``. By default 200 levels equally spaced from 0 to the maximum
            dose in the mask (to 1 Gy when that maximum is not positive).

    Returns:
        ``(doses, volume_percent)``, both float64 of shape ``(B,)``: the dose levels and, for each, the
        percentage (0-100) of the structure's voxels receiving at least that dose.

    Raises:
        InputError: the shapes differ, the mask is empty, or ``bins`` is not 1D.
    """
    values = _dose_in_mask(dose, mask)
    if bins is None:
        top = float(values.max())
        bins = np.linspace(0.0, top if top > 0 else 1.0, DEFAULT_DVH_BINS)
    bins = np.asarray(bins, dtype=np.float64)
    if bins.ndim != 1:
        raise InputError(f"DVH bins must be a 1D array of dose levels; got shape {bins.shape}.")
    # Voxels with dose >= level = all voxels minus those strictly below it (left insertion point in sorted doses).
    below = np.searchsorted(np.sort(values), bins, side="left")
    volume_percent = 100.0 * (values.size - below) / values.size
    return bins, volume_percent


def compare_dvh(
    ct_dose: np.ndarray, sct_dose: np.ndarray, structures: dict[str, np.ndarray]
) -> dict[str, dict[str, dict[str, float]]]:
    """DVH metrics of each structure on the CT dose and the synthetic-CT dose, and their differences.

    Args:
        ct_dose: dose computed on the CT, Gy, shape ``(Z, Y, X)``.
        sct_dose: dose computed on the synthetic CT, same shape.
        structures: structure name -> mask of shape ``(Z, Y, X)`` (nonzero voxels inside).

    Returns:
        ``{structure: {metric: {"ct": v, "sct": v, "difference": sct - ct}}}`` for the metrics of
        :data:`DVH_METRICS`, all plain Python floats (JSON-serialisable).

    Raises:
        InputError: the two doses differ in shape, or a structure's mask is empty or of another shape (the
            message names the structure).
    """
    ct_dose, sct_dose = np.asarray(ct_dose), np.asarray(sct_dose)
    if ct_dose.shape != sct_dose.shape:
        raise InputError(f"The CT dose {ct_dose.shape} and the synthetic-CT dose {sct_dose.shape} differ in shape.")
    comparison: dict[str, dict[str, dict[str, float]]] = {}
    for name, mask in structures.items():
        try:
            ct_metrics, sct_metrics = dvh_metrics(ct_dose, mask), dvh_metrics(sct_dose, mask)
        except InputError as error:
            raise InputError(f"Structure {name!r}: {error}") from error
        comparison[name] = {
            metric: {
                "ct": ct_metrics[metric],
                "sct": sct_metrics[metric],
                "difference": sct_metrics[metric] - ct_metrics[metric],
            }
            for metric in DVH_METRICS
        }
    return comparison
