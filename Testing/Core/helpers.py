"""Small volumes the core tests build for themselves."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def oblique_direction(angle_x_deg: float = 20.0, angle_z_deg: float = 15.0) -> tuple[float, ...]:
    """A proper rotation (rotation about x, then about z) as a row-major 3x3 direction."""
    ax, az = np.deg2rad(angle_x_deg), np.deg2rad(angle_z_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return tuple((rz @ rx).ravel())


def ct_like_volume(size=(20, 18, 12), spacing=(0.7, 0.9, 2.5), oblique: bool = True, seed: int = 0) -> sitk.Image:
    """An ellipsoid of soft tissue with a bright core in air (HU), with oblique direction and anisotropic spacing."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in size[::-1]], indexing="ij")
    r = x**2 + y**2 + z**2
    array = np.where(r < 0.7, 40.0, -1000.0) + np.where(r < 0.15, 700.0, 0.0) + rng.normal(0, 5, r.shape)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 30.25, 7.0))
    if oblique:
        image.SetDirection(oblique_direction())
    return image


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tol: float = 1e-6) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)
