"""Rigid registration recovers known motions of a synthetic phantom, within and across modalities."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedTransCore.errors import InputError
from MedTransCore.metrics import grid_difference
from MedTransCore.registration import RegistrationResult, register_rigid

SPACING = (2.5, 2.5, 3.0)
ROTATION_DEG = (6.0, -5.0, 7.0)
TRANSLATION_MM = (7.0, -6.0, 8.0)
# label -> (CT in HU, an MR-like contrast that is not a monotonic function of the CT)
TISSUES = {0: (-1000.0, 0.0), 1: (40.0, 600.0), 2: (-700.0, 900.0), 3: (800.0, 150.0), 4: (300.0, 350.0)}


def phantom(contrast: int) -> sitk.Image:
    """Ellipsoids of distinct tissues on a 48^3 grid with anisotropic spacing, slightly blurred like a scan."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, 48),) * 3, indexing="ij")
    labels = np.zeros(x.shape, dtype=int)
    labels[(x / 0.75) ** 2 + (y / 0.6) ** 2 + (z / 0.8) ** 2 < 1] = 1
    labels[((x - 0.3) / 0.2) ** 2 + ((y + 0.1) / 0.25) ** 2 + ((z - 0.1) / 0.4) ** 2 < 1] = 2
    labels[((x + 0.35) / 0.15) ** 2 + ((y - 0.2) / 0.15) ** 2 + ((z + 0.2) / 0.3) ** 2 < 1] = 3
    labels[(x / 0.1) ** 2 + ((y + 0.35) / 0.1) ** 2 + (z / 0.7) ** 2 < 1] = 4
    values = np.asarray([TISSUES[label][contrast] for label in sorted(TISSUES)])
    image = sitk.GetImageFromArray(ndimage.gaussian_filter(values[labels], 1.0).astype(np.float32))
    image.SetSpacing(SPACING)
    image.SetOrigin((-60.0, -50.0, -70.0))
    return image


def moved(image: sitk.Image) -> sitk.Image:
    """``image`` moved by the known rigid motion: registering it back must find that motion."""
    motion = sitk.Euler3DTransform()
    motion.SetCenter(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))
    motion.SetRotation(*np.radians(ROTATION_DEG))
    motion.SetTranslation(TRANSLATION_MM)
    low = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(image, image, motion.GetInverse(), sitk.sitkLinear, low)


def body_mae(image: sitk.Image, reference: sitk.Image) -> float:
    body = sitk.GetArrayViewFromImage(phantom(contrast=0)) > -500
    return float(np.abs(sitk.GetArrayViewFromImage(image) - sitk.GetArrayViewFromImage(reference))[body].mean())


def assert_recovers_the_motion(result: RegistrationResult) -> None:
    np.testing.assert_allclose(result.info["rotation_deg"], ROTATION_DEG, atol=1.0)
    np.testing.assert_allclose(result.info["translation_mm"], TRANSLATION_MM, atol=1.0)


def test_a_rotated_and_shifted_ct_is_registered_back_onto_the_fixed_grid():
    fixed = phantom(contrast=0)
    moving = moved(fixed)
    fractions: list[float] = []
    result = register_rigid(fixed, moving, progress=fractions.append, seed=3)

    assert_recovers_the_motion(result)
    assert isinstance(result.transform, sitk.Euler3DTransform)
    assert grid_difference(result.resampled, fixed) is None
    assert body_mae(result.resampled, fixed) < 0.2 * body_mae(moving, fixed)
    # Outside the moving image's field of view the result holds the moving image's minimum (air).
    assert sitk.GetArrayViewFromImage(result.resampled)[-1, -1, -1] == pytest.approx(-1000.0)
    assert result.info["levels"] == 3 and result.info["iterations"] > 0
    assert fractions[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in fractions)

    again = register_rigid(fixed, moving, seed=3)
    np.testing.assert_allclose(again.info["rotation_deg"], result.info["rotation_deg"], atol=1e-6)


def test_an_mr_like_image_with_another_contrast_is_registered_onto_a_ct_by_mutual_information():
    fixed = phantom(contrast=0)
    moving = moved(phantom(contrast=1))
    body = sitk.Cast(fixed > -500, sitk.sitkUInt8)
    result = register_rigid(fixed, moving, fixed_mask=body)

    assert_recovers_the_motion(result)
    expected = phantom(contrast=1)
    assert body_mae(result.resampled, expected) < 0.3 * body_mae(moving, expected)


def test_unusable_images_raise_an_input_error():
    fixed = phantom(contrast=0)
    with pytest.raises(InputError, match="scalar 3D"):
        register_rigid(fixed, sitk.Image(16, 16, sitk.sitkFloat32))
    with pytest.raises(InputError, match="fixed mask"):
        register_rigid(fixed, fixed, fixed_mask=sitk.Image(8, 8, 8, sitk.sitkUInt8))
