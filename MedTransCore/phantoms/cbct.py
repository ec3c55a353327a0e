"""Cone-beam CT from the clean CT: HU miscalibration, scatter cupping, shading, streaks, blur and noise.

CBCT numbers are not calibrated like CT: more scatter lowers the centre of the body (cupping), the
detector gain and spectrum shift and scale the HU, beam hardening between dense bones leaves dark and
bright streaks, and lower dose gives stronger, position-dependent noise. Air outside the body is kept
at -1000 HU like the CT, so every difference between the two is inside the body.
"""

from __future__ import annotations

import numpy as np

from .ct import add_noise
from .fields import NoisePool, blur, separable_profiles


def _footprint_profile(body: np.ndarray, axes_mm: tuple[np.ndarray, ...]) -> np.ndarray:
    """In-plane (y, x) profile: 1 at the centre of the body's footprint, 0 at and beyond its edge."""
    x, y = axes_mm[0], axes_mm[1]
    foot = body.any(axis=0)
    if not foot.any():
        return np.zeros(foot.shape, dtype=np.float32)
    ys, xs = np.nonzero(foot.any(axis=1))[0], np.nonzero(foot.any(axis=0))[0]
    cx, rx = (x[xs[0]] + x[xs[-1]]) / 2, max((x[xs[-1]] - x[xs[0]]) / 2, 1e-3)
    cy, ry = (y[ys[0]] + y[ys[-1]]) / 2, max((y[ys[-1]] - y[ys[0]]) / 2, 1e-3)
    r2 = ((x[None, :] - cx) / rx) ** 2 + ((y[:, None] - cy) / ry) ** 2
    return np.clip(1 - r2, 0, 1).astype(np.float32)


def _streaks(axes_mm, bone: np.ndarray, rng: np.random.Generator) -> list[tuple[slice, np.ndarray]]:
    """2-5 beam-hardening streaks: lines through dense bone, each over a slab of slices (z range, 3D field)."""
    points = np.argwhere(bone)
    if len(points) == 0:
        return []
    x, y, z = axes_mm
    out = []
    for _ in range(int(rng.integers(2, 6))):
        kz, ky, kx = points[rng.integers(len(points))]
        theta = rng.uniform(0, np.pi)
        dist = (x[None, :] - x[kx]) * np.sin(theta) - (y[:, None] - y[ky]) * np.cos(theta)
        width = rng.uniform(1.0, 2.5)
        amp = rng.uniform(40, 150) * (-1 if rng.uniform() < 0.7 else 1)
        line = (amp * np.exp(-0.5 * (dist / width) ** 2)).astype(np.float32)
        half = rng.uniform(8, 30)
        zsel = np.nonzero(np.abs(z - z[kz]) < 2 * half)[0]
        taper = np.exp(-0.5 * ((z[zsel] - z[kz]) / half) ** 2).astype(np.float32)
        out.append((slice(zsel[0], zsel[-1] + 1), taper[:, None, None] * line[None]))
    return out


def cbct_image(
    clean_ct: np.ndarray,
    body: np.ndarray,
    weight: np.ndarray,
    bone: np.ndarray,
    axes_mm: tuple[np.ndarray, np.ndarray, np.ndarray],
    pool: NoisePool,
    rng: np.random.Generator,
) -> np.ndarray:
    """Simulate a CBCT of the same anatomy.

    Args:
        clean_ct: noise-free CT in HU (z, y, x).
        body: boolean body mask (z, y, x).
        weight: smooth body weight (1 inside, 0 in the air away from the body).
        bone: boolean mask of dense bone (streak sources).
        axes_mm: 1D voxel positions along x, y, z (mm).
        pool: the case's white noise.
        rng: this modality's random stream.

    Returns:
        float32 HU (z, y, x).
    """
    profile = _footprint_profile(body, axes_mm)[None]  # 1 at the centre of the body's footprint
    scale = rng.uniform(0.94, 1.04)
    offset = rng.uniform(40, 90) * rng.choice([-1, 1])
    cupping = rng.uniform(10, 30)
    artefact = np.float32(scale - 1) * clean_ct
    artefact += np.float32(offset) - np.float32(cupping) * profile
    for term in separable_profiles(rng, axes_mm, 15.0, 0.8 * max(float(np.ptp(a)) for a in axes_mm)):
        artefact += term  # low-frequency shading
    for zs, streak in _streaks(axes_mm, bone, rng):
        artefact[zs] += streak
    artefact *= weight
    artefact += clean_ct
    image = blur(artefact, rng.uniform(0.5, 0.9))
    # Noise: stronger where the beam crosses more tissue (body centre), spatially correlated.
    sigma = rng.uniform(12, 25) * (0.7 + 0.6 * profile)
    return add_noise(image, weight, sigma, pool.smooth(rng, 0.6))
