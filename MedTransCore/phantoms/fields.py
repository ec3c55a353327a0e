"""Random fields shared by the simulators: white and smooth noise, partial volume, low-frequency profiles.

Everything works on float32 numpy arrays in (z, y, x) order. Smoothing is a separable 3-tap binomial
filter repeated as needed (a close, cheap stand-in for a Gaussian); low-frequency fields are sums or
products of 1D profiles broadcast over the volume, so they cost one or two full-volume operations.
"""

from __future__ import annotations

import numpy as np

# Partial volume: a voxel averages its neighbourhood, modelled as a blur of this width (voxels).
PARTIAL_VOLUME_SIGMA = 0.5


def _passes(sigma: float) -> tuple[int, float]:
    """3-tap passes ``[a, 1 - 2a, a]`` (``a <= 1/4``) whose variances ``2a`` add up to ``sigma**2``."""
    m = max(1, int(np.ceil(sigma**2 / 0.5 - 1e-9)))
    return m, sigma**2 / (2 * m)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-like blur of width ``sigma`` voxels along every axis (edges replicated); returns a new array."""
    if sigma <= 0:
        return image.copy()
    m, a = _passes(sigma)
    out = image
    for axis in range(image.ndim):
        for _ in range(m):
            src, part = out, out * np.float32(a)
            out = src * np.float32(1 - 2 * a)
            lo, hi = [slice(None)] * image.ndim, [slice(None)] * image.ndim
            lo[axis], hi[axis] = slice(None, -1), slice(1, None)
            out[tuple(hi)] += part[tuple(lo)]
            out[tuple(lo)] += part[tuple(hi)]
            lo[axis], hi[axis] = slice(None, 1), slice(-1, None)
            out[tuple(lo)] += part[tuple(lo)]
            out[tuple(hi)] += part[tuple(hi)]
    return out


def kernel_gain(sigma: float, ndim: int = 3) -> float:
    """Standard deviation that unit white noise keeps after ``blur(noise, sigma)``."""
    m, a = _passes(sigma)
    k = np.array([1.0])
    for _ in range(m):
        k = np.convolve(k, [a, 1 - 2 * a, a])
    return float(np.sum(k**2) ** (ndim / 2))


def partial_volume(image: np.ndarray) -> np.ndarray:
    """Blur a piecewise-constant image the way a finite voxel mixes neighbouring tissues."""
    return blur(image, PARTIAL_VOLUME_SIGMA)


class NoisePool:
    """White Gaussian noise for one case, drawn once; every use reads it at its own random offset.

    Shifted white noise is independent of itself voxel by voxel, so the images get independent noise
    for the price of one draw (drawing normals dominates the cost of a small case otherwise).

    Args:
        rng: the case's noise stream.
        shape: volume shape (z, y, x).
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, ...]) -> None:
        self.shape, self.size = tuple(shape), int(np.prod(shape))
        self.pool = rng.standard_normal(self.size + self.size // 2 + 1, dtype=np.float32)

    def white(self, rng: np.random.Generator) -> np.ndarray:
        """Unit white noise (a read-only view of the pool: copy before writing into it)."""
        start = int(rng.integers(0, self.size // 2 + 1))
        view = self.pool[start : start + self.size].reshape(self.shape)
        view.flags.writeable = False
        return view

    def smooth(self, rng: np.random.Generator, sigma: float) -> np.ndarray:
        """Unit-variance noise correlated over ``sigma`` voxels (a new array)."""
        out = blur(self.white(rng), sigma)
        out *= np.float32(1.0 / kernel_gain(sigma))
        return out


def random_profile(
    rng: np.random.Generator, coords: np.ndarray, amplitude: float, wavelengths: tuple[float, float], terms: int = 2
) -> np.ndarray:
    """A smooth random 1D function of ``coords`` (mm): a sum of sinusoids with ``|f| <= amplitude``.

    Args:
        coords: 1D positions (mm).
        amplitude: bound of ``|f|`` (the amplitudes of the terms add up to at most this).
        wavelengths: range of the sinusoid wavelengths (mm).
        terms: number of sinusoids.

    Returns:
        float32 array shaped like ``coords``.
    """
    weights = rng.dirichlet(np.ones(terms)) * amplitude * rng.uniform(0.5, 1.0)
    signs = rng.choice([-1.0, 1.0], size=terms)
    lam = rng.uniform(*wavelengths, size=terms)
    phase = rng.uniform(0, 2 * np.pi, size=terms)
    out = np.zeros(coords.shape, dtype=np.float64)
    for w, s, la, ph in zip(weights, signs, lam, phase, strict=True):
        out += s * w * np.sin(2 * np.pi * coords / la + ph)
    return out.astype(np.float32)


def separable_profiles(
    rng: np.random.Generator, axes_mm: tuple[np.ndarray, ...], amplitude: float, wavelength: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random smooth 1D profiles shaped to broadcast as (z, y, x); their sum is bounded by ``amplitude``.

    Args:
        axes_mm: 1D voxel-centre positions along (x, y, z) in mm.
        amplitude: bound of ``|f(x) + f(y) + f(z)|``.
        wavelength: typical wavelength (mm); the terms use 1-2x this.

    Returns:
        ``(fz[:, None, None], fy[None, :, None], fx[None, None, :])``.
    """
    fx, fy, fz = (random_profile(rng, a, amplitude / 3, (wavelength, 2 * wavelength)) for a in axes_mm)
    return fz[:, None, None], fy[None, :, None], fx[None, None, :]
