"""DVH curves and metrics of MedTransCore.dose.dvh on doses whose DVH is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from MedTransCore.dose.dvh import DVH_METRICS, compare_dvh, dvh_curve, dvh_metrics
from MedTransCore.errors import InputError


def sphere_mask(shape=(12, 12, 12), radius=4.5) -> np.ndarray:
    zz, yy, xx = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    return zz**2 + yy**2 + xx**2 <= radius**2


def random_dose(shape=(12, 12, 12), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(4.0, 10.0, shape)


def test_the_dvh_of_a_uniform_dose_is_a_step_at_that_dose():
    mask = sphere_mask()
    dose = np.where(mask, 3.0, 50.0)  # the dose outside the structure must not matter
    levels, volume = dvh_curve(dose, mask, bins=np.linspace(0.0, 6.0, 13))
    np.testing.assert_array_equal(levels, np.linspace(0.0, 6.0, 13))
    np.testing.assert_array_equal(volume, np.where(levels <= 3.0, 100.0, 0.0))
    metrics = dvh_metrics(dose, mask)
    assert metrics["D98"] == metrics["D2"] == metrics["Dmean"] == 3.0


def test_the_default_dvh_bins_run_from_zero_to_the_maximum_dose_in_the_structure():
    mask = sphere_mask()
    dose = random_dose()
    levels, volume = dvh_curve(dose, mask)
    assert levels.shape == volume.shape == (200,)
    assert levels[0] == 0.0 and levels[-1] == dose[mask].max()
    assert volume[0] == 100.0 and volume[-1] == 100.0 / mask.sum()
    assert np.all(np.diff(volume) <= 0)
    levels, volume = dvh_curve(np.zeros((4, 4, 4)), np.ones((4, 4, 4)))
    assert levels[-1] == 1.0 and volume[0] == 100.0 and volume[1] == 0.0


def test_dose_metrics_are_ordered_and_agree_with_the_dvh_curve_on_a_random_dose():
    mask = sphere_mask()
    dose = random_dose()
    metrics = dvh_metrics(dose, mask)
    assert list(metrics) == list(DVH_METRICS)
    assert metrics["D98"] <= metrics["D95"] <= metrics["D50"] <= metrics["D2"]
    assert metrics["D50"] == pytest.approx(np.median(dose[mask]))
    assert metrics["Dmean"] == pytest.approx(dose[mask].mean())
    # Dx: about x % of the structure receives at least Dx (to within the linear interpolation between 2 voxels).
    n = int(mask.sum())
    for name in ("D98", "D95", "D50", "D2"):
        _, volume = dvh_curve(dose, mask, bins=np.array([metrics[name]]))
        assert abs(volume[0] - float(name[1:])) <= 200.0 / n


def test_compare_dvh_of_identical_doses_gives_zero_differences_and_serialises_to_json():
    dose = random_dose()
    structures = {"body": np.ones(dose.shape, dtype=bool), "ptv": sphere_mask().astype(np.uint8)}
    comparison = compare_dvh(dose, dose.copy(), structures)
    assert list(comparison) == ["body", "ptv"]
    for per_metric in comparison.values():
        assert list(per_metric) == list(DVH_METRICS)
        for values in per_metric.values():
            assert values["difference"] == 0.0 and values["ct"] == values["sct"]
            assert all(type(v) is float for v in values.values())
    assert json.loads(json.dumps(comparison)) == comparison


def test_compare_dvh_differences_are_sct_minus_ct():
    dose = random_dose()
    comparison = compare_dvh(dose, 1.1 * dose, {"ptv": sphere_mask()})
    for values in comparison["ptv"].values():
        assert values["difference"] == pytest.approx(0.1 * values["ct"])


def test_an_empty_mask_or_a_shape_mismatch_is_an_input_error():
    dose = random_dose()
    empty = np.zeros(dose.shape, dtype=bool)
    with pytest.raises(InputError, match="empty"):
        dvh_metrics(dose, empty)
    with pytest.raises(InputError, match="empty"):
        dvh_curve(dose, empty)
    with pytest.raises(InputError, match="'rectum'.*empty"):
        compare_dvh(dose, dose, {"ptv": sphere_mask(), "rectum": empty})
    with pytest.raises(InputError, match="same shape"):
        dvh_metrics(dose, sphere_mask((12, 12, 11)))
    with pytest.raises(InputError, match="differ in shape"):
        compare_dvh(dose, dose[:-1], {"ptv": sphere_mask()})
