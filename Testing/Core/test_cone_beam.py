"""Cone-beam CT simulated from a CT with RTK: calibration, geometry, noise, scatter, beam hardening, truncation, half
fan, errors.

The volumes are small and coarse (4 mm voxels and detector pixels, few views) so each scan takes about a second.
"""

import sys

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.errors import CancelledError, InputError
from MedTransCore.phantoms import ConeBeamResult, ConeBeamSettings, simulate_cbct
from MedTransCore.phantoms.cone_beam_physics import detect, reference_dense_line_integral, water_mu_per_mm

from .helpers import assert_same_geometry, ct_like_volume

pytest.importorskip("itk")

FAST = {"views": 60, "pixel_mm": 4.0, "mas": None, "scatter_to_primary": 0.0}


def water_cylinder(radius_mm: float, size: int = 64, slices: int = 16, spacing: float = 4.0) -> sitk.Image:
    """Water (0 HU) in air, along the slice axis, centred; origin and spacing not trivial."""
    z, y, x = np.mgrid[:slices, :size, :size].astype(np.float32)
    r = np.hypot((y - (size - 1) / 2) * spacing, (x - (size - 1) / 2) * spacing)
    image = sitk.GetImageFromArray(np.where(r < radius_mm, 0.0, -1000.0).astype(np.int16))
    image.SetSpacing([spacing] * 3)
    image.SetOrigin([-31.0, 12.5, 400.0])
    return image


def radius_map(image: sitk.Image) -> np.ndarray:
    """In-plane distance (mm) of each voxel of one slice from the volume's axis."""
    nx, ny, _ = image.GetSize()
    sx, sy, _ = image.GetSpacing()
    return np.hypot(((np.arange(ny) - (ny - 1) / 2) * sy)[:, None], ((np.arange(nx) - (nx - 1) / 2) * sx)[None, :])


def central_slices(result: ConeBeamResult) -> np.ndarray:
    array = sitk.GetArrayFromImage(result.image)
    middle = array.shape[0] // 2
    return array[middle - 2 : middle + 2]


def test_a_water_cylinder_round_trip_recovers_water_and_air():
    ct = water_cylinder(80.0)
    result = simulate_cbct(ct, ConeBeamSettings(**FAST))
    r, slab = radius_map(ct), central_slices(result)
    assert abs(slab[:, r < 50].mean()) < 5.0, "water must come back at 0 HU"
    assert abs(slab[:, (r > 95) & (r < 120)].mean() + 1000.0) < 10.0, "air must come back at -1000 HU"
    meta = result.metadata
    assert meta["synthetic"] == "simulated CBCT" and meta["settings"]["views"] == 60
    assert meta["calibration"]["mu_water_per_mm"] == pytest.approx(water_mu_per_mm(60.0), rel=0.01)
    assert meta["rtk_version"] and not meta["truncated"] and meta["timings_s"]["fdk"] > 0


def test_the_output_is_on_exactly_the_ct_grid():
    ct = sitk.Cast(ct_like_volume(size=(30, 24, 10), spacing=(1.7, 2.1, 3.5)), sitk.sitkInt16)  # oblique
    result = simulate_cbct(ct, ConeBeamSettings(**FAST))
    assert_same_geometry(result.image, ct, tol=0)
    assert_same_geometry(result.field_of_view, ct, tol=0)
    assert result.image.GetPixelID() == sitk.sitkFloat32 and result.field_of_view.GetPixelID() == sitk.sitkUInt8
    array = sitk.GetArrayFromImage(result.image)
    assert np.isfinite(array).all() and array.max() > 300, "the bright core of the phantom must show"


def test_noise_grows_as_mas_drops():
    ct = water_cylinder(80.0)
    inside = radius_map(ct) < 50
    clean = central_slices(simulate_cbct(ct, ConeBeamSettings(**FAST)))
    std = {}
    for mas in (10.0, 160.0):
        noisy = central_slices(simulate_cbct(ct, ConeBeamSettings(**{**FAST, "mas": mas})))
        std[mas] = (noisy - clean)[:, inside].std()
    # Quantum noise: std ~ 1 / sqrt(mAs), so 16x the dose is 4x less noise.
    assert 3.0 < std[10.0] / std[160.0] < 5.0, std


def test_the_same_seed_gives_the_same_noise_and_another_seed_does_not():
    ct = water_cylinder(60.0, size=40, slices=8)
    settings = ConeBeamSettings(**{**FAST, "mas": 200.0})
    first, again = (sitk.GetArrayFromImage(simulate_cbct(ct, settings).image) for _ in range(2))
    other = sitk.GetArrayFromImage(simulate_cbct(ct, ConeBeamSettings(**{**FAST, "mas": 200.0, "seed": 1})).image)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_scatter_cups_a_large_water_cylinder_more_with_more_scatter():
    ct = water_cylinder(120.0, size=72, slices=40)
    r = radius_map(ct)
    depth = {}
    for spr in (0.0, 0.3, 0.8):
        slab = central_slices(simulate_cbct(ct, ConeBeamSettings(**{**FAST, "scatter_to_primary": spr})))
        depth[spr] = slab[:, (r > 85) & (r < 105)].mean() - slab[:, r < 25].mean()  # periphery minus centre
    assert abs(depth[0.0]) < 10.0, depth
    assert 10.0 < depth[0.3] < depth[0.8], depth


def test_a_body_wider_than_the_field_of_view_is_truncated_and_stays_finite():
    ct = water_cylinder(180.0, size=100, slices=10)
    result = simulate_cbct(ct, ConeBeamSettings(**FAST))
    body = sitk.GetArrayFromImage(ct) > -500
    fov = sitk.GetArrayFromImage(result.field_of_view).astype(bool)
    assert result.metadata["truncated"]
    assert fov.sum() < 0.7 * body.sum() and not (fov & ~body).any(), "the FOV lies inside the body"
    array = sitk.GetArrayFromImage(result.image)
    assert np.isfinite(array).all() and (array[~fov] == -1000).all()
    r = radius_map(ct)
    assert abs(central_slices(result)[:, r < 60].mean()) < 150, "truncation leaves a rim, not a wild offset"


def test_half_fan_reconstructs_a_wider_field_of_view_than_full_fan():
    ct = water_cylinder(180.0, size=100, slices=10)
    settings = {**FAST, "views": 90}
    full = simulate_cbct(ct, ConeBeamSettings(**settings))
    half = simulate_cbct(ct, ConeBeamSettings(**settings, half_fan=True))
    assert half.metadata["field_of_view_mm"]["diameter"] > 440 > 280 > full.metadata["field_of_view_mm"]["diameter"]
    assert sitk.GetArrayFromImage(half.field_of_view).sum() > 1.5 * sitk.GetArrayFromImage(full.field_of_view).sum()
    assert not half.metadata["truncated"]
    r, slab = radius_map(ct), central_slices(half)
    assert abs(slab[:, r < 150].mean()) < 15.0, "the displaced-detector weighting must keep water at 0 HU"


def with_rods(ct: sitk.Image, hu: float, offset_mm: float = 30.0, radius_mm: float = 8.0) -> sitk.Image:
    """``ct`` with two dense rods along the slice axis at x = +-offset_mm, y = 0 from the axis."""
    array = sitk.GetArrayFromImage(ct)
    nx, ny, _ = ct.GetSize()
    sx, sy, _ = ct.GetSpacing()
    x, y = (np.arange(nx) - (nx - 1) / 2) * sx, (np.arange(ny) - (ny - 1) / 2) * sy
    for sign in (-1, 1):
        array[:, np.hypot(x[None, :] - sign * offset_mm, y[:, None]) < radius_mm] = hu
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(ct)
    return out


def test_beam_hardening_darkens_water_between_two_metal_rods_and_leaves_far_water_alone():
    ct = with_rods(water_cylinder(80.0), 3000.0)
    n = ct.GetSize()[0]
    x = (np.arange(n) - (n - 1) / 2) * 4.0
    between = (np.abs(x[None, :]) < 14) & (np.abs(x[:, None]) < 3)
    far = (np.abs(x[:, None]) > 45) & (radius_map(ct) < 65)
    linear, hardened = (simulate_cbct(ct, ConeBeamSettings(**FAST, beam_hardening=b)) for b in (0.0, 0.2))
    delta = central_slices(hardened) - central_slices(linear)
    assert delta[:, between].mean() < -40.0, "the rays through both rods must leave a dark streak between them"
    assert abs(delta[:, far].mean()) < 3.0 and np.abs(delta[:, far]).max() < 10.0, "water away from them stays"
    assert "dense_projection" in hardened.metadata["timings_s"]
    assert "dense_projection" not in linear.metadata["timings_s"]


def test_without_beam_hardening_nothing_changes_and_no_dense_projection_is_made():
    ct = with_rods(water_cylinder(60.0, size=40, slices=8), 1500.0, offset_mm=20.0, radius_mm=6.0)
    default = simulate_cbct(ct, ConeBeamSettings(**FAST))
    explicit = simulate_cbct(ct, ConeBeamSettings(**FAST, beam_hardening=0.0))
    assert np.array_equal(sitk.GetArrayFromImage(default.image), sitk.GetArrayFromImage(explicit.image))
    assert "dense_projection" not in default.metadata["timings_s"]
    assert list(default.metadata["timings_s"]) == list(explicit.metadata["timings_s"])


def test_beam_hardening_spares_water_and_measures_two_cm_of_bone_one_over_one_plus_b():
    mu = water_mu_per_mm(60.0)
    water = np.full((1, 2, 3), 30.0 * mu * 10.0, dtype=np.float32)  # 30 cm of water
    common = {"mu_water": mu, "u_mm": np.arange(3.0), "pixel_mm": 1.0, "spr": 0.0, "photons": None, "rng": None}
    plain = detect(water, beam_hardening=0.0, **common)
    assert np.array_equal(detect(water, beam_hardening=0.3, **common), plain)
    assert np.array_equal(detect(water, beam_hardening=0.3, dense=np.zeros_like(water), **common), plain)
    d_ref = reference_dense_line_integral(mu)
    assert d_ref == pytest.approx(mu * 1.3 * 20.0)
    bone = np.full((1, 2, 3), 2.5 * mu * 20.0, dtype=np.float32)  # 2 cm of 1500 HU: 1.2 water + 1.3 dense
    measured = detect(bone, beam_hardening=0.05, dense=np.full_like(bone, d_ref), **common)
    assert measured == pytest.approx(bone - d_ref + d_ref / 1.05, rel=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        {"views": 2},
        {"views": 100.5},
        {"source_isocentre_mm": 1600.0},
        {"panel_mm": (400.0, 0.0)},
        {"pixel_mm": 0.0},
        {"energy_kev": 10.0},
        {"scatter_to_primary": -0.1},
        {"mas": 0.0},
        {"beam_hardening": 2.0},
        {"recon_spacing_mm": 0.0},
        {"seed": -1},
    ],
)
def test_bad_settings_are_refused_when_they_are_made(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ConeBeamSettings(**bad)


def test_bad_images_are_refused_with_an_input_error():
    with pytest.raises(InputError, match="3D"):
        simulate_cbct(sitk.Image([32, 32], sitk.sitkFloat32))
    with pytest.raises(InputError, match="single slice"):
        simulate_cbct(sitk.Image([32, 32, 1], sitk.sitkFloat32))
    nan = water_cylinder(40.0, size=16, slices=4)
    nan = sitk.Cast(nan, sitk.sitkFloat32)
    nan[3, 3, 1] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        simulate_cbct(nan)


def test_cancel_stops_the_simulation_and_progress_rises_to_one():
    ct = water_cylinder(60.0, size=40, slices=8)
    with pytest.raises(CancelledError):
        simulate_cbct(ct, ConeBeamSettings(**FAST), cancel=lambda: True)
    calls = []
    with pytest.raises(CancelledError):  # in the middle of FDK
        simulate_cbct(
            ct, ConeBeamSettings(**FAST), progress=calls.append, cancel=lambda: bool(calls) and calls[-1] > 0.6
        )
    assert 0.6 < calls[-1] < 0.95
    seen = []
    simulate_cbct(ct, ConeBeamSettings(**FAST), progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)


def test_without_rtk_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "itk", None)
    with pytest.raises(InputError, match=r"medtrans\[cbct\]"):
        simulate_cbct(water_cylinder(40.0, size=16, slices=4))
