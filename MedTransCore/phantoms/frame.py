"""The pose of one case: voxel grid (world, LPS mm, centred at 0) -> anatomical frame (mm).

A case is an anatomy drawn in its own frame, then scaled (to fit the field of view, times a random
size), rotated, shifted and bent by a smooth random warp. The warp is additive and separable
(``d_i = sum_j g_ij(w_j)``), so every anatomical coordinate is a sum of three 1D arrays: building the
coordinates costs two full-volume additions per axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import random_profile

_BIG = 1e4


def grid_axes(shape_xyz: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1D world positions (mm) of the voxel centres along x, y, z of a grid centred at the origin."""
    return tuple((np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape_xyz, spacing, strict=True))


@dataclass
class Frame:
    """Voxel grid and pose.

    Args:
        shape_xyz: voxels along (x, y, z).
        spacing: voxel size along (x, y, z) in mm.
        affine: anatomical -> world linear map (rotation @ scale), 3x3.
        translation: world position of the anatomical origin (mm).
        warp: ``warp[i][j]``: displacement of world axis ``i`` as a 1D function of the voxel positions
            along axis ``j`` (mm).
    """

    shape_xyz: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    translation: np.ndarray
    warp: list[list[np.ndarray]]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return self.shape_xyz[::-1]

    @property
    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """1D world positions (mm) of the voxel centres along x, y, z (volume centred at 0)."""
        return grid_axes(self.shape_xyz, self.spacing)

    @property
    def scale(self) -> float:
        """Mean size factor anatomical mm -> world mm."""
        return float(abs(np.linalg.det(self.affine)) ** (1 / 3))

    @classmethod
    def sample(
        cls,
        shape_xyz: tuple[int, int, int],
        spacing: tuple[float, float, float],
        half_extent: tuple[float, float, float],
        rng: np.random.Generator,
        centre: tuple[float, float, float] = (0.0, 0.0, 0.0),
        max_shift: tuple[float, float, float] = (10.0, 10.0, 10.0),
    ) -> Frame:
        """A random pose that keeps an anatomy of ``half_extent`` around ``centre`` (mm; ``inf`` = unbounded) in view.

        ``centre`` (anatomical mm) lands at the middle of the volume, up to a random shift of at most
        ``max_shift`` mm per axis (less when the field of view leaves less room).

        The anatomy is shrunk (never enlarged) to fit the field of view, then varies by about +-10 %
        in size, +-5 % per axis, a few degrees of rotation, a shift and a smooth bend of a few mm.
        """
        half_fov = 0.5 * np.asarray(shape_xyz, float) * np.asarray(spacing, float)
        ext = np.asarray(half_extent, float)
        bounded = np.isfinite(ext)
        size_max = 1.1 * 1.05
        fit = min(1.0, float(np.min(0.97 * half_fov[bounded] / (ext[bounded] * size_max))))
        scale = fit * rng.uniform(0.9, 1.1) * rng.uniform(0.95, 1.05, size=3)
        angles = np.deg2rad(rng.uniform(-1, 1, size=3) * np.array([6.0, 4.0, 7.0]))
        cx, cy, cz = np.cos(angles)
        sx, sy, sz = np.sin(angles)
        rot = (
            np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
            @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
            @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        )
        margin = np.where(bounded, np.maximum(half_fov - np.where(bounded, ext, 0) * scale * 1.05, 0), 15 * fit)
        translation = rng.uniform(-1, 1, size=3) * np.minimum(margin * 0.5, np.asarray(max_shift) * fit)
        affine = rot @ np.diag(scale)
        frame = cls(tuple(shape_xyz), tuple(spacing), affine, translation - affine @ np.asarray(centre, float), [])
        amp, wl = 3.0 * fit, (100 * fit, 250 * fit)
        frame.warp = [[random_profile(rng, axis, amp, wl) for axis in frame.axes] for _ in range(3)]
        return frame

    def coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Anatomical x, y, z (mm) of every voxel: three float32 arrays shaped (z, y, x)."""
        inv = np.linalg.inv(self.affine)
        axes = self.axes
        out = []
        for a in range(3):
            terms = [
                sum(inv[a, i] * ((axes[j] if i == j else 0) + self.warp[i][j]) for i in range(3)) for j in range(3)
            ]
            const = -inv[a] @ self.translation
            tx, ty, tz = (np.asarray(t, dtype=np.float32) for t in terms)
            out.append(tz[:, None, None] + ty[None, :, None] + (tx + np.float32(const))[None, None, :])
        return tuple(out)

    def region(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        """The (z, y, x) voxel box covering the anatomical box ``[lo, hi]`` (``None`` when off the grid)."""
        lo, hi = np.clip(lo, -_BIG, _BIG), np.clip(hi, -_BIG, _BIG)
        corners = np.array([[(lo, hi)[(k >> i) & 1][i] for i in range(3)] for k in range(8)])
        world = corners @ self.affine.T + self.translation
        reach = np.array([sum(float(np.abs(g).max()) for g in row) for row in self.warp])
        wlo, whi = world.min(axis=0) - reach, world.max(axis=0) + reach
        sl = []
        for a in (2, 1, 0):
            n, s = self.shape_xyz[a], self.spacing[a]
            i0 = max(int(np.floor(wlo[a] / s + (n - 1) / 2)), 0)
            i1 = min(int(np.ceil(whi[a] / s + (n - 1) / 2)) + 1, n)
            if i0 >= i1:
                return None
            sl.append(slice(i0, i1))
        return tuple(sl)
