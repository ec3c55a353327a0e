"""Every metric of MedTransCore.metrics against an independent implementation (skimage, MONAI, scipy, numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.metrics import MultiScaleSSIMMetric, PSNRMetric, SSIMMetric
from scipy import ndimage, stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

from MedTransCore.errors import InputError
from MedTransCore.metrics import (
    CT_METRIC_NAMES,
    METRIC_NAMES,
    MS_SSIM_WEIGHTS,
    checkerboard_ratio,
    compute_metrics,
    difference_map,
    evaluate_images,
    ms_ssim_config,
    to_metric_scale,
)

LOW, HIGH = -1024.0, 3000.0


def ct_pair(shape=(32, 32, 32), seed=0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth body-like reference in HU (air, soft tissue, lung, bone), a noisy biased prediction, a body mask."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    body = (zz / 0.9) ** 2 + (yy / 0.7) ** 2 + (xx / 0.8) ** 2 < 1
    reference = np.full(shape, -1000.0)
    reference[body] = 40.0
    reference[((yy + 0.1) / 0.3) ** 2 + ((xx - 0.35) / 0.25) ** 2 + (zz / 0.6) ** 2 < 1] = -800.0
    reference[(yy / 0.12) ** 2 + (xx / 0.12) ** 2 < 1] = 900.0
    reference = ndimage.gaussian_filter(reference, 1.0) + rng.normal(0, 10, shape)
    prediction = reference + rng.normal(5.0, 60.0, shape)
    prediction[reference > 500] += 300.0  # some values beyond the evaluation window's top after clipping
    return prediction, reference, body


def skimage_ssim_map(prediction, reference, low, high):
    _, ssim_map = structural_similarity(
        reference - low,
        prediction - low,
        data_range=high - low,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    return ssim_map


def test_every_ct_metric_matches_an_independent_implementation():
    prediction, reference, mask = ct_pair()
    result = compute_metrics(prediction, reference, "CT", mask=mask)
    assert set(result) == set(CT_METRIC_NAMES) | {"voxels"}

    error = prediction[mask] - reference[mask]
    assert result["MAE"] == pytest.approx(np.mean(np.abs(error)))
    assert result["ME"] == pytest.approx(np.mean(error))
    assert result["NMSE"] == pytest.approx(np.sum(error**2) / np.sum(reference[mask] ** 2))
    assert result["NCC"] == pytest.approx(stats.pearsonr(prediction[mask], reference[mask])[0])
    assert result["voxels"] == mask.sum()

    p_clip, r_clip = np.clip(prediction, LOW, HIGH), np.clip(reference, LOW, HIGH)
    assert result["PSNR"] == pytest.approx(peak_signal_noise_ratio(r_clip[mask], p_clip[mask], data_range=HIGH - LOW))

    # SynthRAD: outside the mask both are set to -1024, the SSIM map is averaged in the mask minus a 5-voxel border.
    ssim_map = skimage_ssim_map(np.where(mask, p_clip, LOW), np.where(mask, r_clip, LOW), LOW, HIGH)
    assert result["SSIM"] == pytest.approx(crop(ssim_map, 5)[crop(mask, 5)].mean(), abs=1e-10)


def test_unmasked_ssim_psnr_and_ms_ssim_equal_skimage_and_monai_on_the_whole_volume():
    prediction, reference, _ = ct_pair(shape=(48, 48, 48), seed=1)
    result = compute_metrics(prediction, reference, "CT")
    p_clip, r_clip = np.clip(prediction, LOW, HIGH), np.clip(reference, LOW, HIGH)

    expected_ssim = structural_similarity(
        r_clip - LOW, p_clip - LOW, data_range=HIGH - LOW, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert result["SSIM"] == pytest.approx(expected_ssim, abs=1e-10)
    assert result["PSNR"] == pytest.approx(peak_signal_noise_ratio(r_clip, p_clip, data_range=HIGH - LOW))

    as_tensor = [torch.from_numpy(a - LOW)[None, None].float() for a in (p_clip, r_clip)]
    monai_ssim = SSIMMetric(spatial_dims=3, data_range=HIGH - LOW, win_size=11, kernel_sigma=1.5)(*as_tensor)
    assert result["SSIM"] == pytest.approx(monai_ssim.item(), abs=1e-4)
    monai_psnr = PSNRMetric(max_val=HIGH - LOW)(*as_tensor)
    assert result["PSNR"] == pytest.approx(monai_psnr.item(), abs=1e-3)

    assert ms_ssim_config((48, 48, 48)) == (3, 11)
    weights = tuple(w / sum(MS_SSIM_WEIGHTS[:3]) for w in MS_SSIM_WEIGHTS[:3])
    monai_ms = MultiScaleSSIMMetric(spatial_dims=3, data_range=HIGH - LOW, kernel_size=11, weights=weights)
    assert result["MS_SSIM"] == pytest.approx(monai_ms(*as_tensor).item(), abs=1e-4)


def test_masked_ms_ssim_is_monai_on_the_mask_bounding_box_with_a_smaller_window_for_small_boxes():
    prediction, reference, _ = ct_pair(shape=(40, 40, 40), seed=2)
    mask = np.zeros(reference.shape, dtype=bool)
    mask[8:32, 5:35, 6:34] = True
    mask[8:12, 5:9, 6:10] = False  # not a box: the outside-mask fill matters
    result = compute_metrics(prediction, reference, "CT", mask=mask)

    box = (slice(8, 32), slice(5, 35), slice(6, 34))
    assert ms_ssim_config((24, 30, 28)) == (2, 7)
    filled = [np.where(mask, np.clip(a, LOW, HIGH), LOW)[box] - LOW for a in (prediction, reference)]
    weights = tuple(w / sum(MS_SSIM_WEIGHTS[:2]) for w in MS_SSIM_WEIGHTS[:2])
    monai_ms = MultiScaleSSIMMetric(
        spatial_dims=3, data_range=HIGH - LOW, kernel_size=7, kernel_sigma=1.5 * 7 / 11, weights=weights
    )
    expected = monai_ms(*(torch.from_numpy(a)[None, None].float() for a in filled)).item()
    assert result["MS_SSIM"] == pytest.approx(expected, abs=1e-4)


def test_ms_ssim_is_nan_when_the_mask_box_is_too_small_for_any_scale():
    prediction, reference, _ = ct_pair(shape=(16, 16, 16))
    mask = np.zeros(reference.shape, dtype=bool)
    mask[4:8, 4:12, 4:12] = True
    assert ms_ssim_config((4, 8, 8)) is None
    assert math.isnan(compute_metrics(prediction, reference, "CT", mask=mask)["MS_SSIM"])


def test_mr_metrics_use_each_volume_normalised_by_its_own_robust_range():
    _, reference, mask = ct_pair(seed=3)
    reference = np.clip(reference + 1000.0, 0, None)  # non-negative, MR-like
    rng = np.random.default_rng(3)
    prediction = 2.5 * (reference + rng.normal(0, 20, reference.shape))  # another scale, some noise

    result = compute_metrics(prediction, reference, "MR_T2", mask=mask)
    assert set(result) == set(METRIC_NAMES) | {"voxels"}

    def unit_range(a):
        return np.clip(a / np.percentile(a[mask], 99.5), 0, 1)

    p, r = unit_range(prediction), unit_range(reference)
    np.testing.assert_allclose(to_metric_scale(prediction, "MR_T2", mask), p)
    assert result["MAE"] == pytest.approx(np.mean(np.abs(p - r)[mask]))
    assert result["ME"] == pytest.approx(np.mean((p - r)[mask]))
    assert result["NMSE"] == pytest.approx(np.sum((p - r)[mask] ** 2) / np.sum(r[mask] ** 2))
    assert result["NCC"] == pytest.approx(stats.pearsonr(p[mask], r[mask])[0])
    assert result["PSNR"] == pytest.approx(peak_signal_noise_ratio(r[mask], p[mask], data_range=1.0))
    ssim_map = skimage_ssim_map(np.where(mask, p, 0), np.where(mask, r, 0), 0.0, 1.0)
    assert result["SSIM"] == pytest.approx(crop(ssim_map, 5)[crop(mask, 5)].mean(), abs=1e-10)

    # Without a mask the robust range comes from the positive voxels.
    unmasked = compute_metrics(prediction, reference, "MR_T2")
    p, r = (np.clip(a / np.percentile(a[a > 0], 99.5), 0, 1) for a in (prediction, reference))
    assert unmasked["MAE"] == pytest.approx(np.mean(np.abs(p - r)))


def test_identical_images_score_perfectly_with_an_infinite_psnr():
    _, reference, mask = ct_pair()
    for modality, volume in (("CT", reference), ("MR_T1", np.clip(reference + 1000, 0, None))):
        result = compute_metrics(volume.copy(), volume, modality, mask=mask)
        assert result["MAE"] == 0 and result["ME"] == 0 and result["NMSE"] == 0
        assert result["PSNR"] == math.inf
        assert result["SSIM"] == pytest.approx(1.0)
        assert result["MS_SSIM"] == pytest.approx(1.0)
        assert result["NCC"] == pytest.approx(1.0)


def test_errors_outside_the_mask_change_only_the_unmasked_scores():
    prediction, reference, mask = ct_pair()
    spoiled = prediction.copy()
    spoiled[~mask] += 500.0
    masked_before = compute_metrics(prediction, reference, "CT", mask=mask)
    masked_after = compute_metrics(spoiled, reference, "CT", mask=mask)
    for name in CT_METRIC_NAMES:
        assert masked_after[name] == pytest.approx(masked_before[name], nan_ok=True)

    unmasked = compute_metrics(spoiled, reference, "CT")
    assert unmasked["voxels"] == reference.size and masked_after["voxels"] == mask.sum()
    assert unmasked["MAE"] == pytest.approx(np.mean(np.abs(spoiled - reference)))
    assert unmasked["MAE"] > masked_after["MAE"] + 100


def test_slice_difference_ignores_an_error_shared_by_neighbouring_slices_and_measures_flicker():
    _, reference, mask = ct_pair()
    biased = compute_metrics(reference + 30.0, reference, "CT", mask=mask)
    assert biased["SLICE_DIFF"] == pytest.approx(0.0, abs=1e-9) and biased["MAE"] == pytest.approx(30.0)
    flicker = reference + np.where(np.arange(reference.shape[0]) % 2 == 0, 20.0, -20.0)[:, None, None]
    assert compute_metrics(flicker, reference, "CT", mask=mask)["SLICE_DIFF"] == pytest.approx(40.0)
    one_slice = np.zeros_like(mask)
    one_slice[5] = mask[5]
    assert math.isnan(compute_metrics(flicker, reference, "CT", mask=one_slice)["SLICE_DIFF"])


def test_per_tissue_mae_uses_the_reference_classes_with_known_answers():
    reference = np.zeros((8, 8, 8))
    reference[:2] = -1000.0  # air
    reference[2:4] = -200.0  # soft tissue (inclusive bound)
    reference[4:6] = 200.0  # soft tissue (inclusive bound)
    reference[6:] = 1200.0  # bone
    offsets = np.select([reference < -200, reference > 200], [10.0, -30.0], 20.0)
    prediction = reference + offsets
    prediction[:, 0] = reference[:, 0] - 4.0 * np.sign(offsets[:, 0])  # opposite sign on one row

    mask = np.ones(reference.shape, dtype=bool)
    result = compute_metrics(prediction, reference, "CT", mask=mask)
    assert result["MAE_air"] == pytest.approx((7 * 10 + 4) / 8)
    assert result["MAE_soft_tissue"] == pytest.approx((7 * 20 + 4) / 8)
    assert result["MAE_bone"] == pytest.approx((7 * 30 + 4) / 8)
    assert result["MAE"] == pytest.approx(
        np.mean([result["MAE_air"], *[result["MAE_soft_tissue"]] * 2, result["MAE_bone"]])
    )

    mask[6:] = False  # no bone inside the mask
    no_bone = compute_metrics(prediction, reference, "CT", mask=mask)
    assert math.isnan(no_bone["MAE_bone"])
    assert no_bone["MAE_air"] == result["MAE_air"]


def test_difference_map_is_signed_float32_prediction_minus_reference():
    prediction, reference, _ = ct_pair(shape=(8, 9, 10))
    diff = difference_map(prediction, reference)
    assert diff.dtype == np.float32 and diff.shape == (8, 9, 10)
    np.testing.assert_allclose(diff, prediction - reference, atol=1e-3)
    with pytest.raises(InputError):
        difference_map(prediction, reference[:-1])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p, r, m: (p[:-1], r, m), "same shape"),
        (lambda p, r, m: (np.where(m, p, np.nan), r, m), "NaN"),
        (lambda p, r, m: (p, np.where(m, r, np.inf), m), "reference contains"),
        (lambda p, r, m: (p, r, m[:-1]), "mask"),
        (lambda p, r, m: (p, r, np.zeros_like(m)), "empty"),
    ],
)
def test_unusable_inputs_raise_an_input_error(change, message):
    prediction, reference, mask = change(*ct_pair(shape=(8, 8, 8)))
    with pytest.raises(InputError, match=message):
        compute_metrics(prediction, reference, "CT", mask=mask)


def to_image(array, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_evaluate_images_scores_images_on_one_grid_and_reports_the_mask_volume():
    prediction, reference, mask = ct_pair(shape=(16, 16, 16))
    result = evaluate_images(to_image(prediction), to_image(reference), "CT", to_image(mask.astype(np.uint8)))
    expected = compute_metrics(prediction, reference, "CT", mask=mask)
    assert result["MAE"] == pytest.approx(expected["MAE"])
    assert result["volume_ml"] == pytest.approx(mask.sum() * 2.0 / 1000.0)


def test_evaluate_images_on_different_grids_asks_for_rigid_registration():
    prediction, reference, mask = ct_pair(shape=(16, 16, 16))
    with pytest.raises(InputError, match=r"different grids \(origin.*--register rigid"):
        evaluate_images(to_image(prediction), to_image(reference, origin=(0.0, 3.0, 0.0)), "CT")
    with pytest.raises(InputError, match="--register rigid"):
        evaluate_images(to_image(prediction[1:]), to_image(reference[1:], spacing=(1.0, 1.0, 3.0)), "CT")
    with pytest.raises(InputError, match="mask and reference are on different grids"):
        evaluate_images(to_image(prediction), to_image(reference), "CT", to_image(mask[1:].astype(np.uint8)))


def test_the_checkerboard_ratio_is_about_one_for_a_smooth_image_and_large_for_a_transposed_convolution_grid():
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(rng.standard_normal((6, 96, 96)), 2.0)
    brain = np.zeros(smooth.shape, bool)
    brain[:, 8:88, 8:88] = True
    assert checkerboard_ratio(smooth, brain) < 2
    # A stride-2 transposed convolution's grid: odd rows and columns brighter.
    lines = np.zeros(smooth.shape[1:])
    lines[1::2, :] += 1
    lines[:, 1::2] += 1
    gridded = smooth + 0.05 * smooth.std() * lines
    assert checkerboard_ratio(gridded, brain) > 5 * checkerboard_ratio(smooth, brain)
    assert checkerboard_ratio(gridded, brain, period=4) < 2  # a period-2 grid has no period-4 component
    with pytest.raises(InputError, match="no axial slice"):
        checkerboard_ratio(smooth, np.zeros_like(brain))
    with pytest.raises(InputError, match="period must be even"):
        checkerboard_ratio(smooth, brain, period=3)
