"""Preprocessing: body mask, resampling and back, crop/pad and back, sliding windows that blend exactly."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedTransCore.errors import CancelledError
from MedTransCore.preprocess import (
    CropPad,
    body_mask,
    crop_or_pad,
    pad_to_multiple,
    resample_like,
    resample_to_spacing,
    run_sliding_windows,
    sliding_window_positions,
    undo_crop_or_pad,
)


def ellipsoid_phantom(inside: float, outside: float, pocket: float, shape=(24, 32, 32)):
    """An ellipsoid body with a spherical air pocket inside; returns (image, body including the pocket)."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    centre = [(n - 1) / 2 for n in shape]
    body = ((z - centre[0]) / 10) ** 2 + ((y - centre[1]) / 12) ** 2 + ((x - centre[2]) / 14) ** 2 <= 1
    air = ((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= 16
    noise = np.random.default_rng(0).normal(0.0, 5.0, shape)
    array = np.where(body, inside, outside) + noise
    array[air] = pocket + noise[air]
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing((0.8, 0.8, 1.5))
    return image, body


def smooth_image(shape=(20, 24, 22), spacing=(1.0, 1.2, 1.5)) -> sitk.Image:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    array = np.sin(x / 5.0) + np.cos(y / 6.0) + 0.5 * np.sin(z / 4.0)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((3.0, -7.0, 11.0))
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.3, 0.0, 0.2)
    image.SetDirection(rotation.GetMatrix())
    return image


@pytest.mark.parametrize(
    "modality, inside, outside, pocket", [("CT", 40.0, -1000.0, -1000.0), ("MR_T1", 600.0, 10.0, 0.0)]
)
def test_the_body_mask_of_an_ellipsoid_is_filled_including_its_air_pocket(modality, inside, outside, pocket):
    image, body = ellipsoid_phantom(inside, outside, pocket)
    mask = body_mask(image, modality)
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSpacing() == image.GetSpacing()
    array = sitk.GetArrayFromImage(mask).astype(bool)
    assert array[body].all(), "the air pocket (or part of the body) is missing"
    assert (array & ~body).sum() <= 0.01 * body.sum()


def test_the_body_mask_keeps_only_the_largest_component_and_fills_an_open_airway():
    image, body = ellipsoid_phantom(40.0, -1000.0, -1000.0)
    array = sitk.GetArrayFromImage(image)
    array[:, 15:17, 15:17] = -1000.0  # an airway running through the whole volume: a hole in every slice only
    array[1:3, 1:3, 1:3] = 40.0  # a speck of noise outside the body
    noisy = sitk.GetImageFromArray(array)
    noisy.CopyInformation(image)
    mask = sitk.GetArrayFromImage(body_mask(noisy, "CBCT")).astype(bool)
    assert mask[body].all()
    assert not mask[1:3, 1:3, 1:3].any()


def test_the_body_mask_of_pure_air_is_empty():
    air = sitk.GetImageFromArray(np.full((8, 8, 8), -1000.0, np.float32))
    assert not sitk.GetArrayFromImage(body_mask(air, "CT")).any()


def test_resampling_to_no_spacing_or_the_same_spacing_returns_the_image_unchanged():
    image = smooth_image()
    assert resample_to_spacing(image, None, default_value=0.0) is image
    assert resample_to_spacing(image, image.GetSpacing(), default_value=0.0) is image


def test_resampling_keeps_origin_direction_and_extent():
    image = smooth_image()
    resampled = resample_to_spacing(image, [2.0, 2.0, 2.0], default_value=0.0)
    assert resampled.GetOrigin() == image.GetOrigin() and resampled.GetDirection() == image.GetDirection()
    assert resampled.GetSpacing() == (2.0, 2.0, 2.0) and resampled.GetPixelID() == image.GetPixelID()
    extent = np.array(image.GetSize()) * image.GetSpacing()
    assert np.all(np.abs(np.array(resampled.GetSize()) * 2.0 - extent) <= 1.0)


def test_resampling_to_half_spacing_and_back_returns_the_original():
    image = smooth_image()
    fine = resample_to_spacing(image, [s / 2 for s in image.GetSpacing()], default_value=0.0)
    back = resample_like(fine, image, default_value=0.0)
    assert (back.GetSize(), back.GetSpacing(), back.GetOrigin()) == (
        image.GetSize(),
        image.GetSpacing(),
        image.GetOrigin(),
    )
    np.testing.assert_allclose(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image), atol=1e-5)


def test_resampling_to_another_spacing_and_back_is_close_on_a_smooth_image():
    image = smooth_image()
    coarse = resample_to_spacing(image, [0.7, 1.1, 1.3], default_value=0.0)
    back = sitk.GetArrayFromImage(resample_like(coarse, image, default_value=0.0))
    original = sitk.GetArrayFromImage(image)
    inner = (slice(1, -2),) * 3  # the last source voxels lie beyond the last resampled voxel centre
    assert np.abs(back[inner] - original[inner]).max() < 0.02


def test_a_mask_resampled_with_nearest_neighbour_stays_binary():
    image, _ = ellipsoid_phantom(40.0, -1000.0, -1000.0)
    mask = body_mask(image, "CT")
    coarse = resample_to_spacing(mask, [1.7, 1.7, 2.2], interpolator=sitk.sitkNearestNeighbor, default_value=0)
    assert coarse.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(sitk.GetArrayFromImage(coarse))) == {0, 1}


@pytest.mark.parametrize("shape, target", [((10, 7, 9), (8, 12, 9)), ((5, 6, 7), (5, 6, 7)), ((3, 20, 4), (16, 3, 5))])
def test_crop_or_pad_and_its_undo_restore_the_kept_region_exactly(shape, target):
    array = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)  # with a channel axis
    out, info = crop_or_pad(array, target, pad_value=-1.0)
    assert out.shape == (2, *target) and isinstance(info, CropPad)
    back = undo_crop_or_pad(out, info, pad_value=-5.0)
    assert back.shape == array.shape
    kept = (slice(None), *(slice(b, n - a) for (b, a), n in zip(info.crop, shape)))
    np.testing.assert_array_equal(back[kept], array[kept])
    lost = np.ones(array.shape, bool)
    lost[kept] = False
    assert np.all(back[lost] == -5.0)
    added = np.ones(out.shape, bool)
    added[(slice(None), *(slice(b, n - a) for (b, a), n in zip(info.pad, target)))] = False
    assert np.all(out[added] == -1.0)


def test_crop_or_pad_is_centred():
    out, info = crop_or_pad(np.arange(10.0), (6,), pad_value=0.0)
    np.testing.assert_array_equal(out, np.arange(2.0, 8.0))
    out, info = crop_or_pad(np.ones(3), (6,), pad_value=0.0)
    np.testing.assert_array_equal(out, [0, 1, 1, 1, 0, 0])
    assert info.pad == ((1, 2),)


def test_pad_to_multiple_pads_up_to_divisible_sizes_and_undoes_exactly():
    array = np.random.default_rng(1).normal(size=(13, 16, 9))
    out, info = pad_to_multiple(array, 8, pad_value=0.0)
    assert out.shape == (16, 16, 16)
    np.testing.assert_array_equal(undo_crop_or_pad(out, info, pad_value=0.0), array)
    out, _ = pad_to_multiple(array, (4, 5, 3), pad_value=0.0)
    assert out.shape == (16, 20, 9)


def test_sliding_window_positions_cover_the_volume_with_windows_inside_it():
    shape, window = (37, 50, 29), (16, 16, 16)
    positions = sliding_window_positions(shape, window, overlap=0.25)
    covered = np.zeros(shape, int)
    for slices in positions:
        assert all(0 <= s.start and s.stop <= n and s.stop - s.start == w for s, n, w in zip(slices, shape, window))
        covered[slices] += 1
    assert covered.min() >= 1
    assert sliding_window_positions((8, 8, 8), window) == [(slice(0, 16),) * 3]


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_blending_identical_windows_returns_the_input(mode):
    volume = torch.randn(1, 1, 37, 50, 29) * 100.0
    original = volume.clone()
    fractions = []
    out = run_sliding_windows(volume, (16, 16, 16), lambda w: w, mode=mode, progress=fractions.append)
    torch.testing.assert_close(out, original, rtol=1e-6, atol=1e-6 * 100.0)
    torch.testing.assert_close(volume, original, rtol=0, atol=0)  # the caller's volume is untouched
    assert len(fractions) == len(sliding_window_positions((37, 50, 29), (16, 16, 16)))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_a_volume_smaller_than_the_window_is_padded_then_cropped_back():
    volume = torch.randn(1, 1, 10, 20, 12)
    seen = []

    def double(window: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(window.shape))
        return window * 2.0

    out = run_sliding_windows(volume, (16, 16, 16), double)
    assert out.shape == volume.shape and set(seen) == {(1, 1, 16, 16, 16)}
    torch.testing.assert_close(out, volume * 2.0)


def test_cancelling_stops_the_sliding_windows():
    calls = []
    with pytest.raises(CancelledError):
        run_sliding_windows(
            torch.zeros(1, 1, 32, 32, 32), (16, 16, 16), lambda w: calls.append(1) or w, cancel=lambda: len(calls) >= 2
        )
    assert len(calls) == 2
