"""Grids of the cone-beam simulation: the CT's, a coarser work grid aligned with it, and RTK's frame.

The work grid has the CT's direction, centre and extent, with voxels no finer than the reconstruction spacing. RTK
rotates about its ``y`` axis, so the CT's slice axis becomes RTK's ``y`` (and the CT's ``y`` RTK's ``z``), with the
isocentre at the volume's centre; the mirror image this makes is undone on the way back, and a circular scan does not
depend on it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .cone_beam_physics import hu_to_mu


def work_grid(ct: sitk.Image, recon_spacing_mm: float, mu_water: float) -> sitk.Image:
    """The CT as attenuation (1/mm, float32) on a grid of at least ``recon_spacing_mm`` per axis (the CT's own grid
    when it is already that coarse), smoothed before it is resampled so fine detail does not alias."""
    mu = sitk.GetImageFromArray(hu_to_mu(sitk.GetArrayViewFromImage(ct), mu_water))
    mu.CopyInformation(ct)
    spacing = np.array(ct.GetSpacing())
    size = np.array(ct.GetSize())
    wanted = np.maximum(spacing, recon_spacing_mm)
    if np.allclose(wanted, spacing):
        return mu
    new_size = np.maximum(1, np.round(size * spacing / wanted)).astype(int)
    new_spacing = size * spacing / new_size  # the same extent exactly
    direction = np.array(ct.GetDirection()).reshape(3, 3)
    centre = np.array(ct.GetOrigin()) + direction @ ((size - 1) / 2 * spacing)
    grid = sitk.Image([int(n) for n in new_size], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in new_spacing])
    grid.SetDirection(ct.GetDirection())
    grid.SetOrigin([float(o) for o in centre - direction @ ((new_size - 1) / 2 * new_spacing)])
    variance = np.clip(new_spacing**2 - spacing**2, 0, None) / 4  # sigma: half the added voxel width
    smooth = sitk.DiscreteGaussian(mu, variance=[float(v) for v in variance], useImageSpacing=True)
    return sitk.Resample(smooth, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def rtk_shape(work: sitk.Image) -> tuple[int, int, int]:
    """The work grid's size in RTK's ``(x, y, z)`` order."""
    nx, ny, nz = work.GetSize()
    return nx, nz, ny


def to_rtk_frame(work: sitk.Image) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """``(array [z, y, x], spacing (x, y, z), origin (x, y, z))`` of ``work`` in RTK's frame, centred on 0."""
    array = np.ascontiguousarray(sitk.GetArrayViewFromImage(work).transpose(1, 0, 2))
    sx, sy, sz = work.GetSpacing()
    spacing = (sx, sz, sy)
    origin = tuple(-(n - 1) / 2 * s for n, s in zip(rtk_shape(work), spacing))
    return array, spacing, origin


def from_rtk_frame(crop: np.ndarray, lows: list[int], work: sitk.Image, fill: float = -1000.0) -> np.ndarray:
    """A reconstruction of part of the RTK-frame grid (starting at index ``lows``, ``(x, y, z)``) as a whole
    work-grid array ``[k, j, i]``, ``fill`` elsewhere."""
    nx, ny, nz = rtk_shape(work)
    full = np.full((nz, ny, nx), fill, dtype=crop.dtype)
    cz, cy, cx = crop.shape
    full[lows[2] : lows[2] + cz, lows[1] : lows[1] + cy, lows[0] : lows[0] + cx] = crop
    return full.transpose(1, 0, 2)


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetDirection(), b.GetDirection())
    )


def grid_images(hu: np.ndarray, fov: np.ndarray, work: sitk.Image, ct: sitk.Image) -> tuple[sitk.Image, sitk.Image]:
    """HU (float32, linear) and FOV mask (uint8, nearest) on exactly the CT's grid; outside the work grid: air, 0."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(hu, dtype=np.float32))
    mask = sitk.GetImageFromArray(np.ascontiguousarray(fov, dtype=np.uint8))
    image.CopyInformation(work)
    mask.CopyInformation(work)
    if not _same_grid(work, ct):
        image = sitk.Resample(image, ct, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
        mask = sitk.Resample(mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    image.CopyInformation(ct)  # exactly, not to resampling round-off
    mask.CopyInformation(ct)
    return image, mask
