import numpy as np
import pytest

from MedTransCore.errors import InputError
from MedTransCore.modalities import (
    CT_WINDOW_HU,
    MODALITIES,
    default_params,
    denormalise,
    display_window,
    get_modality,
    normalisation_params,
    normalise,
)

EXPECTED_KEYS = {"CT", "CBCT", "MR_T1", "MR_T1C", "MR_T2", "MR_FLAIR", "MR_PD", "CT_ARTERIAL", "CT_VENOUS"}


def test_the_registry_has_every_modality_of_the_issue():
    assert set(MODALITIES) == EXPECTED_KEYS
    assert {m.unit for m in MODALITIES.values() if m.is_ct} == {"HU"}


def test_an_unknown_modality_is_a_clear_error_listing_the_keys():
    with pytest.raises(InputError, match="MR_T2"):
        get_modality("T2")


@pytest.mark.parametrize("key", sorted(EXPECTED_KEYS))
def test_normalisation_has_an_exact_inverse(key):
    rng = np.random.default_rng(0)
    array = rng.uniform(-1000, 2000, size=(8, 9, 10)) if get_modality(key).is_ct else rng.gamma(2.0, 200.0, (8, 9, 10))
    params = normalisation_params(array, key, mask=array > np.median(array))
    np.testing.assert_allclose(denormalise(normalise(array, params), params), array, rtol=0, atol=1e-9)


def test_ct_window_maps_to_minus_one_and_one():
    params = normalisation_params(np.zeros(4), "CT")
    np.testing.assert_allclose(normalise(np.array(CT_WINDOW_HU), params), [-1.0, 1.0])


def test_mr_normalisation_uses_a_robust_percentile_inside_the_mask():
    array = np.zeros((10, 10, 10))
    array[2:8, 2:8, 2:8] = np.linspace(1, 100, 216).reshape(6, 6, 6)
    array[0, 0, 0] = 1e6  # a hot voxel outside the mask must not set the scale
    mask = np.zeros_like(array, bool)
    mask[2:8, 2:8, 2:8] = True
    params = normalisation_params(array, "MR_T1", mask)
    assert params["low"] == 0.0
    assert 95 < params["high"] <= 100
    assert normalise(0.0, params) == -1.0


def test_synthetic_mr_without_statistics_gets_a_canonical_scale():
    assert default_params("MR_T2") == {"low": 0.0, "high": 1000.0}
    assert default_params("CT") == {"low": CT_WINDOW_HU[0], "high": CT_WINDOW_HU[1]}


def test_display_window_is_fixed_for_ct_and_data_driven_for_mr():
    assert display_window("CT") == (40.0, 400.0)
    level, width = display_window("MR_T1", np.linspace(0, 500, 1000))
    assert 200 < level < 300 and 400 < width < 520


def test_brain_percentile_normalisation_puts_every_scans_tissue_on_one_range_whatever_its_offset():
    from MedTransCore.modalities import normalise_with_scheme

    rng = np.random.default_rng(0)
    tissue = rng.gamma(4.0, 100.0, 5000)
    for offset, scale in ((0.0, 1.0), (900.0, 0.01)):  # raw, and z-scored then shifted like BraTS 2013
        scan = np.r_[np.zeros(3000), offset + scale * tissue]
        params = normalisation_params(scan, "MR_T2", scheme="brain_percentiles")
        out = normalise_with_scheme(scan, params, "brain_percentiles")
        assert np.all(out[:3000] == -1.0)  # the background, below the tissue
        np.testing.assert_allclose(np.percentile(out[3000:], [0.5, 99.5]), [-0.8, 1.0], atol=1e-9)
        np.testing.assert_allclose(denormalise(normalise(scan, params), params), scan, atol=1e-9)  # exact inverse
    with pytest.raises(InputError, match="unknown MR normalisation"):
        normalisation_params(scan, "MR_T2", scheme="z")
