"""In-body intensity quantiles and monotone quantile matching (numpy only: GUI processes import it without torch).

Used by the histogram-matching baseline, by models that map their output onto reference quantiles, and by the
front ends' "histogram matching" column next to a model's metrics.
"""

from __future__ import annotations

import numpy as np

N_QUANTILES = 201
# Normalised value of air (CT-like) and of no signal (MR).
BACKGROUND = -1.0


def quantile_levels() -> np.ndarray:
    return np.linspace(0.0, 1.0, N_QUANTILES)


def inbody_quantiles(values: np.ndarray) -> np.ndarray:
    """Quantiles (``N_QUANTILES`` levels) of normalised in-body intensities, float64."""
    return np.quantile(np.asarray(values, dtype=np.float64), quantile_levels())


def volume_quantiles(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """:func:`inbody_quantiles` of ``volume`` inside ``mask`` (of the whole volume when the mask is empty)."""
    values = volume[mask]
    return inbody_quantiles(values if values.size else volume.ravel())


def match_quantiles(values: np.ndarray, source_quantiles: np.ndarray, target_quantiles: np.ndarray) -> np.ndarray:
    """Map normalised ``values`` monotonically so that ``source_quantiles`` land on ``target_quantiles``.

    Args:
        values: normalised intensities, any shape.
        source_quantiles: ``(N_QUANTILES,)`` in-body quantiles of the volume ``values`` come from.
        target_quantiles: ``(N_QUANTILES,)`` reference quantiles of the target modality.

    Returns:
        float64 array of ``values``' shape.
    """
    # Quantiles of a volume with large uniform regions repeat; np.interp needs increasing x.
    src_q, idx = np.unique(source_quantiles, return_index=True)
    tgt_q = np.asarray(target_quantiles)[idx]
    # Anchor "nothing" (air / no signal, normalised -1) to itself so the background outside the body stays
    # background instead of taking the darkest in-body value.
    if src_q[0] > BACKGROUND and tgt_q[0] > BACKGROUND:
        src_q, tgt_q = np.concatenate([[BACKGROUND], src_q]), np.concatenate([[BACKGROUND], tgt_q])
    return np.interp(values, src_q, tgt_q)
