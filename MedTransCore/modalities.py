"""The modality registry: one home for units, normalisation and display settings.

Normalisation maps intensities to roughly [-1, 1] with an exact affine inverse (no clipping), so a
round trip through the pipeline returns the input:

* CT-like (HU): a fixed window ``[-1024, 3000]`` HU -> ``[-1, 1]`` (the SynthRAD evaluation range);
* MR (unitless, non-negative): ``0 -> -1`` and the robust upper percentile inside the body mask -> ``1``.

A bundle may declare a narrower window per CT-like modality (``normalisation.intensity_window``; the ``window``
arguments here): its ``[low, high]`` maps to ``[-1, 1]`` and the model's input is clipped to that range
(``normalise_with_scheme(..., clip=True)``); see :mod:`MedTransCore.intensity_window` for the values outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .errors import InputError

CT_WINDOW_HU = (-1024.0, 3000.0)
MR_UPPER_PERCENTILE = 99.5
# Scale of a synthetic MR when no source statistics apply (MR has no absolute unit).
MR_CANONICAL_HIGH = 1000.0
#: MR normalisation schemes (:func:`normalisation_params`); a bundle names its own in ``normalisation.mr_scheme``.
MR_SCHEMES = ("zero_to_percentile", "brain_percentiles")
#: ``brain_percentiles``: these percentiles of the brain map to ``BRAIN_LOW_VALUE`` and 1.
BRAIN_PERCENTILES = (0.5, 99.5)
BRAIN_LOW_VALUE = -0.8


@dataclass(frozen=True)
class Modality:
    """One imaging modality.

    Args:
        key: registry key, e.g. ``"MR_T1"``.
        description: human-readable name.
        kind: ``"ct"`` (values in Hounsfield units) or ``"mr"`` (unitless).
        unit: ``"HU"`` or ``"a.u."``.
        dicom_modality: the DICOM Modality (0008,0060) value expected for this modality.
        window: display ``(level, width)``; ``None`` means derive from the data (MR).
    """

    key: str
    description: str
    kind: Literal["ct", "mr"]
    unit: str
    dicom_modality: str
    window: tuple[float, float] | None

    @property
    def is_ct(self) -> bool:
        return self.kind == "ct"


MODALITIES: dict[str, Modality] = {
    m.key: m
    for m in (
        Modality("CT", "CT (non-contrast)", "ct", "HU", "CT", (40.0, 400.0)),
        Modality("CBCT", "Cone-beam CT", "ct", "HU", "CT", (40.0, 400.0)),
        Modality("CT_ARTERIAL", "Contrast CT, arterial phase", "ct", "HU", "CT", (60.0, 500.0)),
        Modality("CT_VENOUS", "Contrast CT, portal-venous phase", "ct", "HU", "CT", (60.0, 400.0)),
        Modality("MR_T1", "MR T1-weighted", "mr", "a.u.", "MR", None),
        Modality("MR_T1C", "MR T1-weighted, contrast-enhanced", "mr", "a.u.", "MR", None),
        Modality("MR_T2", "MR T2-weighted", "mr", "a.u.", "MR", None),
        Modality("MR_FLAIR", "MR T2-FLAIR", "mr", "a.u.", "MR", None),
        Modality("MR_PD", "MR proton-density-weighted", "mr", "a.u.", "MR", None),
    )
}


def get_modality(key: str) -> Modality:
    """Return the registered modality ``key`` or raise an ``InputError`` listing the valid keys."""
    try:
        return MODALITIES[key]
    except KeyError:
        raise InputError(f"unknown modality {key!r}; choose one of {', '.join(MODALITIES)}") from None


def normalisation_params(
    array: np.ndarray,
    modality: str,
    mask: np.ndarray | None = None,
    scheme: str = MR_SCHEMES[0],
    window: tuple[float, float] | None = None,
) -> dict[str, float]:
    """Parameters of the affine normalisation of ``array`` for ``modality``.

    Args:
        array: intensities, any shape.
        modality: registry key.
        mask: optional boolean array of the same shape (body mask) for the MR percentile.
        scheme: MR only: ``"zero_to_percentile"`` (``0 -> -1``, the 99.5th percentile in ``mask`` -> 1) or
            ``"brain_percentiles"`` for skull-stripped brains: the 0.5th and 99.5th percentiles of the non-zero
            (brain) voxels -> -0.8 and 1, so every scan's tissue lands on the same range whatever its offset
            (raw, z-scored and shifted, bias-corrected), with room below for the background.
        window: CT-like only: a bundle's intensity window ``(low, high)`` in HU for this modality, used instead of
            ``CT_WINDOW_HU`` (``None``: the default).

    Returns:
        ``{"low": value mapped to -1, "high": value mapped to +1}``.
    """
    m = get_modality(modality)
    if window is not None:
        return _window_params(m, window)
    if m.is_ct:
        return {"low": CT_WINDOW_HU[0], "high": CT_WINDOW_HU[1]}
    if scheme not in MR_SCHEMES:
        raise InputError(f"unknown MR normalisation {scheme!r}; choose one of {', '.join(MR_SCHEMES)}")
    if scheme == "brain_percentiles":
        values = array[array != 0]
        if values.size:
            p_low, p_high = (float(v) for v in np.percentile(values, BRAIN_PERCENTILES))
            if np.isfinite(p_low) and np.isfinite(p_high) and p_high > p_low:
                # p_low -> BRAIN_LOW_VALUE, p_high -> 1 (affine): solve for the values that map to -1 and 1.
                width = (p_high - p_low) * 2.0 / (1.0 - BRAIN_LOW_VALUE)
                return {"low": p_high - width, "high": p_high}
    values = array[mask] if mask is not None and mask.any() else array[array > 0]
    if values.size == 0:
        values = array.ravel()
    high = float(np.percentile(values, MR_UPPER_PERCENTILE))
    if not np.isfinite(high) or high <= 0:
        high = float(np.max(array)) if np.max(array) > 0 else 1.0
    return {"low": 0.0, "high": high}


def default_params(modality: str, window: tuple[float, float] | None = None) -> dict[str, float]:
    """Normalisation parameters for a synthetic output of ``modality`` with no statistics of its own (``window``: a
    bundle's intensity window of this CT-like modality)."""
    m = get_modality(modality)
    if window is not None:
        return _window_params(m, window)
    if m.is_ct:
        return {"low": CT_WINDOW_HU[0], "high": CT_WINDOW_HU[1]}
    return {"low": 0.0, "high": MR_CANONICAL_HIGH}


def _window_params(modality: Modality, window: tuple[float, float]) -> dict[str, float]:
    low, high = (float(v) for v in window)
    if not modality.is_ct:
        raise InputError(f"{modality.key} has no absolute unit: an intensity window is for CT-like modalities only")
    if not low < high:
        raise InputError(f"the intensity window of {modality.key} must have low < high, got [{low}, {high}]")
    return {"low": low, "high": high}


def normalise(array, params: dict[str, float]):
    """Map intensities to the model range: ``low -> -1``, ``high -> 1`` (numpy array or torch tensor)."""
    low, high = params["low"], params["high"]
    return (array - low) * (2.0 / (high - low)) - 1.0


def normalise_with_scheme(
    array: np.ndarray, params: dict[str, float], scheme: str = MR_SCHEMES[0], clip: bool = False
) -> np.ndarray:
    """:func:`normalise`, and with ``brain_percentiles`` the background (voxels exactly 0) at -1, below the brain's
    range whatever the scan's offset (the synthetic output is 0 there: ``output_mask``); with ``clip`` (an
    intensity window's parameters) the result is clipped to ``[-1, 1]``."""
    out = normalise(array, params)
    if scheme == "brain_percentiles":
        out = np.where(np.asarray(array) == 0, -1.0, out).astype(out.dtype, copy=False)
    if clip:
        out = np.clip(out, -1.0, 1.0)
    return out


def denormalise(array, params: dict[str, float]):
    """Exact inverse of :func:`normalise`."""
    low, high = params["low"], params["high"]
    return (array + 1.0) * ((high - low) / 2.0) + low


def display_window(modality: str, array: np.ndarray | None = None) -> tuple[float, float]:
    """Display ``(level, width)``: the registry's for CT, robust percentiles of the data for MR."""
    m = get_modality(modality)
    if m.window is not None:
        return m.window
    if array is None or not np.any(array > 0):
        return (MR_CANONICAL_HIGH / 2, MR_CANONICAL_HIGH)
    lo, hi = np.percentile(array[array > 0], [1.0, 99.5])
    return (float((lo + hi) / 2), float(max(hi - lo, 1e-6)))
