"""classify_domain: a skull-stripped brain, a whole head and a phantom told apart on tiny synthetic volumes."""

import time

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.domain import InputDomain, bundle_domain_words, classify_domain, domain_hints, domain_misfits
from MedTransCore.phantoms import generate_phantom
from MedTransCore.plausibility import check_plausibility


def ellipsoid(shape_zyx, semi_axes_mm, spacing_mm):
    """A boolean ellipsoid centred in a (Z, Y, X) grid; semi-axes and spacing in (z, y, x) mm."""
    axes = [(np.arange(n) - (n - 1) / 2) * s / a for n, s, a in zip(shape_zyx, spacing_mm, semi_axes_mm)]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return z**2 + y**2 + x**2 <= 1.0


def skull_stripped_brain(seed=0):
    """A 140 x 170 x 130 mm brain-like ellipsoid of MR signal on an exactly zero background, 4 mm voxels."""
    rng = np.random.default_rng(seed)
    brain = ellipsoid((50, 60, 50), (65, 85, 70), (4.0, 4.0, 4.0))
    return np.where(brain, rng.normal(400, 40, brain.shape), 0.0).astype(np.float32)


def whole_head(seed=0):
    """A head: skin and fat, a bright skull shell around the brain, noisy air around it (not exactly zero)."""
    rng = np.random.default_rng(seed)
    shape, spacing = (60, 64, 52), (4.0, 4.0, 4.0)
    head = ellipsoid(shape, (105, 110, 85), spacing)
    skull = ellipsoid(shape, (90, 95, 72), spacing)
    brain = ellipsoid(shape, (80, 85, 65), spacing)
    array = np.abs(rng.normal(0, 15, shape))  # Rician-like air floor
    array[head] = 700.0  # scalp fat
    array[skull & ~brain] = 80.0  # bone: dark on T1
    array[brain] = 400.0
    return array.astype(np.float32)


def test_a_zero_background_brain_shaped_volume_is_a_skull_stripped_brain():
    domain = classify_domain(skull_stripped_brain(), "MR_T1", (4.0, 4.0, 4.0))
    assert (domain.anatomy, domain.preprocessing, domain.kind) == ("brain", "skull-stripped", "unknown")
    assert "brain-sized" in domain.reasons[0]


def test_a_head_with_skull_and_noisy_air_is_a_whole_head():
    domain = classify_domain(whole_head(), "MR_T1", (4.0, 4.0, 4.0))
    assert (domain.anatomy, domain.preprocessing) == ("head", "whole-head")
    assert any("not zero" in r for r in domain.reasons)


def test_a_head_whose_background_was_zeroed_is_still_a_whole_head_not_a_brain():
    array = whole_head()
    array[array < 40] = 0.0  # a masked background: zeros outside, but the body is a head
    domain = classify_domain(array, "MR_T1", (4.0, 4.0, 4.0))
    assert domain.preprocessing == "whole-head" and domain.anatomy == "head"


def test_a_zero_background_blob_too_small_for_a_brain_is_not_called_skull_stripped():
    array = skull_stripped_brain()
    small = classify_domain(array, "MR_T1", (1.0, 1.0, 1.0))  # the same voxels, a quarter the size: 35 mm
    assert small.preprocessing == "unknown"


def test_a_generated_phantom_is_marked_and_classified_as_a_phantom_head(tmp_path):
    case = generate_phantom("head", seed=5, shape=(24, 24, 24), spacing=(8.0, 8.0, 8.0), modalities=["MR_T1", "CT"])
    hints = domain_hints(case.images["MR_T1"])
    assert hints == {"phantom": True, "anatomy": "head"}
    domain = classify_domain(sitk.GetArrayViewFromImage(case.images["MR_T1"]), "MR_T1", (8.0,) * 3, **hints)
    assert (domain.anatomy, domain.preprocessing, domain.kind) == ("head", "whole-head", "phantom")
    # The marker survives the file the generator writes (NIfTI descrip).
    case.save(tmp_path)
    read = sitk.ReadImage(str(tmp_path / "CT.nii.gz"))
    assert domain_hints(read)["phantom"] is True
    assert domain_hints({"descrip": read.GetMetaData("descrip")}) == hints


def test_an_unmarked_phantom_ct_is_not_trusted_as_a_phantom_but_its_look_is_reported():
    case = generate_phantom("head", seed=5, shape=(24, 24, 24), spacing=(8.0, 8.0, 8.0), modalities=["CT"])
    array = sitk.GetArrayFromImage(case.images["CT"])  # the voxels alone: no metadata
    domain = classify_domain(array, "CT", (8.0,) * 3)
    assert domain.kind == "unknown" and domain.phantom_signature
    warnings = check_plausibility(array, "CT", size=(24, 24, 24), spacing=(8.0,) * 3, domain=domain)
    assert any("no phantom marker" in w for w in warnings)


def test_an_image_without_a_marker_gives_no_hints_and_the_caller_may_say_real():
    image = sitk.GetImageFromArray(skull_stripped_brain())
    assert domain_hints(image) == {} and domain_hints({"descrip": "spm - algebra"}) == {}
    assert classify_domain(skull_stripped_brain(), "MR_T2", (4.0,) * 3, phantom=False).kind == "real"


def test_classifying_a_brats_sized_volume_takes_well_under_a_second():
    array = np.zeros((155, 240, 240), np.float32)
    array[10:140, 30:210, 50:190] = ellipsoid((130, 180, 140), (65, 90, 70), (1.0, 1.0, 1.0)) * 300.0
    start = time.perf_counter()
    domain = classify_domain(array, "MR_FLAIR", (1.0, 1.0, 1.0))
    assert time.perf_counter() - start < 1.0
    assert domain.preprocessing == "skull-stripped"


@pytest.mark.parametrize(
    ("bundle_domain", "fits"),
    [
        ({"anatomy": "brain", "preprocessing": "skull-stripped", "training_data": "real"}, True),
        ({"anatomy": "head", "preprocessing": "whole-head", "training_data": "phantom"}, False),
        ({"anatomy": "any", "preprocessing": "any", "training_data": "none"}, True),
        (None, False),
    ],
)
def test_a_skull_stripped_scan_fits_only_a_model_trained_on_data_like_it(bundle_domain, fits):
    scan = InputDomain("brain", "skull-stripped", "unknown")
    assert (not domain_misfits(scan, bundle_domain)) is fits


def test_a_model_trained_on_simulated_sources_fits_a_phantom_but_not_a_scan_and_says_why():
    simulated = {"anatomy": "any", "preprocessing": "any", "training_data": "simulated"}
    assert not domain_misfits(InputDomain("head", "whole-head", "phantom"), simulated)
    for kind in ("real", "unknown"):
        (why,) = domain_misfits(InputDomain("head", "whole-head", kind), simulated)
        assert "simulated (not a scanner's)" in why
    assert "simulated sources of real and phantom anatomy" in bundle_domain_words(simulated)


def test_the_demo_writes_its_phantom_with_the_marker_so_the_file_is_translated_as_a_phantom_again(tmp_path):
    from MedTransCore.cli.demo import _phantom_notes, _write
    from MedTransCore.io import read_image
    from MedTransCore.phantoms import generate_phantom

    case = generate_phantom(anatomy="head", seed=1, shape=(16, 16, 16), spacing=(8.0, 8.0, 8.0), modalities=["CBCT"])
    image = case.images["CBCT"]
    path = _write(image, tmp_path / "source_CBCT.nii.gz", _phantom_notes(image))
    _, info = read_image(path)
    assert domain_hints(info.metadata) == {"phantom": True, "anatomy": "head"}
