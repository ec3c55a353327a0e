"""Gamma pass rates of MedTransCore.dose.gamma on small doses whose gamma follows from its definition."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.dose.gamma import CRITERIA, gamma_index, gamma_pass_rates
from MedTransCore.errors import InputError

SPACING = (2.0, 2.0, 2.0)
N = 16
MAX_DOSE = 2.0


def _profile(n: int = N) -> np.ndarray:
    """1D field profile: a 1.0 plateau over the 8 central voxels, linear ramps to 0 over 4 voxels each side."""
    i = np.arange(n)
    return np.clip((n / 2 - 0.5 - np.abs(i - (n / 2 - 0.5))) / 4.0, 0.0, 1.0)


def box_dose() -> np.ndarray:
    """(Z, Y, X) dose, Gy: a uniform 2 Gy box with linear falloffs (25 % of the maximum per 2 mm voxel)."""
    p = _profile()
    return MAX_DOSE * p[:, None, None] * p[None, :, None] * p[None, None, :]


def plateau_interior() -> np.ndarray:
    """Voxels whose neighbours are all at the maximum dose, so every point within 2 mm has the plateau dose."""
    p = _profile()
    inner = np.zeros(N, dtype=bool)
    inner[np.flatnonzero(p == 1.0)[1:-1]] = True
    return inner[:, None, None] & inner[None, :, None] & inner[None, None, :]


def image(array: np.ndarray, spacing=SPACING, origin=(-10.0, 4.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(array.astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def test_identical_doses_pass_every_criterion_at_100_percent():
    dose = box_dose()
    rates, gamma_map = gamma_pass_rates(image(dose), image(dose))
    assert list(rates) == ["1%/1mm", "2%/2mm", "3%/3mm"]
    assert rates == {key: 100.0 for key in rates}
    assert gamma_map.dtype == np.float32 and gamma_map.shape == dose.shape
    np.testing.assert_array_equal(gamma_map[~np.isnan(gamma_map)], 0.0)


def test_a_6_mm_shift_fails_the_tight_criteria_and_pass_rates_grow_with_the_criteria():
    # A slab with the box profile along x only: a 3D box takes ~6 s here, as most voxels fail and are searched
    # out to max_gamma * distance.
    dose = MAX_DOSE * np.broadcast_to(_profile(), (4, 4, N)).copy()
    shifted = np.zeros_like(dose)
    shifted[..., 3:] = dose[..., :-3]  # 3 voxels of 2 mm along x; the profile is 0 outside the grid
    rates, _ = gamma_pass_rates(image(dose), image(shifted))
    assert rates["1%/1mm"] < 100.0 and rates["2%/2mm"] < 100.0
    assert rates["3%/3mm"] >= rates["2%/2mm"] >= rates["1%/1mm"]
    # The ramps move by 6 mm, twice the largest distance criterion: nowhere near 100 %.
    assert rates["3%/3mm"] < 90.0


def test_a_2_5_percent_scale_passes_3_percent_everywhere_but_fails_the_plateau_at_1_and_2_percent():
    dose = box_dose()
    rates, gamma_2_2 = gamma_pass_rates(image(dose), image(1.025 * dose))
    # At distance 0 the difference is at most 2.5 % of the maximum dose: gamma <= 2.5 / 3 everywhere.
    assert rates["3%/3mm"] == 100.0
    # On the plateau every point within 2 mm is 2.5 % too hot, so gamma > 1 for 1%/1mm and 2%/2mm there.
    interior = plateau_interior()
    assert interior.sum() == 6**3
    assert np.all(gamma_2_2[interior] > 1.0)
    assert rates["1%/1mm"] <= 100.0 * (1 - interior.sum() / np.count_nonzero(~np.isnan(gamma_2_2)))
    assert rates["2%/2mm"] < 100.0
    # Below 80 % of the maximum the difference is under 2 % of it: these voxels pass 2%/2mm at distance 0.
    low = (dose >= 0.1 * MAX_DOSE) & (dose < 0.8 * MAX_DOSE)
    assert np.all(gamma_2_2[low] <= 1.0)


def test_voxels_below_the_10_percent_cutoff_are_nan_in_the_map():
    dose = box_dose()
    gamma = gamma_index(image(dose), image(1.01 * dose), 2.0, 2.0)
    assert gamma.dtype == np.float32 and gamma.shape == dose.shape
    below = dose < 10.0 / 100.0 * dose.max()
    assert below.any() and (~below).any()
    np.testing.assert_array_equal(np.isnan(gamma), below)
    assert np.all((gamma[~below] >= 0.0) & (gamma[~below] <= 2.0))


@pytest.mark.parametrize(
    "evaluated",
    [
        image(box_dose(), spacing=(2.0, 2.0, 2.5)),
        image(box_dose(), origin=(-10.0, 4.0, 2.0)),
        image(box_dose()[:, :, :-1]),
    ],
    ids=["spacing", "origin", "size"],
)
def test_a_grid_mismatch_is_an_input_error(evaluated):
    with pytest.raises(InputError, match="same grid"):
        gamma_pass_rates(image(box_dose()), evaluated)


def test_the_criteria_are_the_synthrad_triplet_and_keys_follow_them():
    assert CRITERIA == ((1.0, 1.0), (2.0, 2.0), (3.0, 3.0))
    dose = box_dose()
    rates, _ = gamma_pass_rates(image(dose), image(dose), criteria=((3, 2), (1.5, 1)))
    assert list(rates) == ["3%/2mm", "1.5%/1mm"]
