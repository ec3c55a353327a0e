"""CT from tissue labels: native and contrast-enhanced (arterial, portal-venous) phases in HU."""

from __future__ import annotations

import numpy as np

from .fields import partial_volume
from .tissues import Tissue, lookup

AIR_HU = -1000.0
# phase of each CT-like registry key (None: no contrast)
CT_PHASES: dict[str, str | None] = {"CT": None, "CT_ARTERIAL": "arterial", "CT_VENOUS": "venous"}


def clean_ct(
    labels: np.ndarray,
    tissues: dict[int, Tissue],
    texture: np.ndarray,
    phase: str | None,
    extra: np.ndarray | None = None,
) -> np.ndarray:
    """Noise-free CT: tissue HU (+ iodine enhancement of ``phase``) + tissue texture, with partial volume.

    Args:
        labels: uint8 label map (z, y, x).
        tissues: the case's tissue table.
        texture: unit-variance smooth noise (z, y, x) shared by all modalities (same tissue, same pattern).
        phase: ``None``, ``"arterial"`` or ``"venous"``.
        extra: HU added before partial volume (heterogeneous enhancement such as the arterial spleen), or ``None``.

    Returns:
        float32 HU (z, y, x).
    """
    enhancement = {label: getattr(t, phase) for label, t in tissues.items()} if phase else None
    hu = lookup(tissues, "hu_texture")[labels]
    hu *= texture
    hu += lookup(tissues, "hu", enhancement, fill=AIR_HU)[labels]
    if extra is not None:
        hu += extra
    return partial_volume(hu)


def add_noise(image: np.ndarray, weight: np.ndarray, sigma: float | np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``image + sigma * noise`` inside the body (``weight`` 1), fading to none in the air (``weight`` 0).

    The air away from the body is set to exactly -1000 HU, as scanners reconstruct it.

    Args:
        image: HU (z, y, x).
        weight: smooth body weight (z, y, x) in [0, 1].
        sigma: noise standard deviation (HU), a number or an array broadcasting to the image.
        noise: unit-variance noise (z, y, x).
    """
    out = noise * weight
    out *= np.asarray(sigma, dtype=np.float32)
    out += image
    out[weight == 0] = AIR_HU
    return out


def ct_image(
    clean: np.ndarray,
    weight: np.ndarray,
    noise: np.ndarray,
    rng: np.random.Generator,
    sigma_hu: tuple[float, float] = (4.0, 10.0),
) -> np.ndarray:
    """A diagnostic CT: the clean image with white quantum noise of ``sigma_hu`` HU (dose and kernel vary per scan)."""
    return add_noise(clean, weight, rng.uniform(*sigma_hu), noise)
