"""The physics-based phantom generator: determinism, geometry, tissue values, modality physics, files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedTransCore.phantoms import ANATOMIES, PHANTOM_MODALITIES, Label, generate_phantom
from MedTransCore.phantoms.mr import SEQUENCES, signal_lut
from MedTransCore.phantoms.tissues import TISSUES, tissue_table

SMALL = {"shape": (24, 24, 24), "spacing": (8.0, 8.0, 8.0)}


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def tissue_mean(case, key: str, label: Label) -> float:
    """Mean of image ``key`` over every voxel of ``label``."""
    return float(arr(case.images[key])[arr(case.labels) == label].mean())


@pytest.fixture(scope="module")
def head():
    return generate_phantom("head", seed=5, shape=(48, 48, 48), spacing=(4.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def pelvis():
    return generate_phantom("pelvis", seed=5, shape=(40, 40, 40), spacing=(8.0, 8.0, 8.0))


def test_the_registry_lists_three_anatomies_and_all_nine_modalities():
    assert set(ANATOMIES) == {"head", "pelvis", "abdomen"}
    assert len(PHANTOM_MODALITIES) == 9 and {"CT", "CBCT", "MR_FLAIR", "CT_VENOUS"} <= set(PHANTOM_MODALITIES)


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_the_same_seed_gives_bit_identical_volumes(anatomy):
    a, b = generate_phantom(anatomy, seed=3, **SMALL), generate_phantom(anatomy, seed=3, **SMALL)
    assert np.array_equal(arr(a.labels), arr(b.labels)) and np.array_equal(arr(a.body_mask), arr(b.body_mask))
    for key in PHANTOM_MODALITIES:
        assert np.array_equal(arr(a.images[key]), arr(b.images[key])), key
    assert a.info == b.info


@pytest.mark.parametrize("anatomy", ANATOMIES)
def test_different_seeds_differ_in_anatomy_lesions_and_images(anatomy):
    a, b = generate_phantom(anatomy, seed=0, **SMALL), generate_phantom(anatomy, seed=1, **SMALL)
    assert not np.array_equal(arr(a.labels), arr(b.labels))
    assert a.info["scale"] != b.info["scale"] and a.info["lesions"] != b.info["lesions"]
    for key in PHANTOM_MODALITIES:
        assert not np.array_equal(arr(a.images[key]), arr(b.images[key])), key


def test_a_subset_of_modalities_gives_the_same_images_as_the_full_set():
    full = generate_phantom("head", seed=2, **SMALL)
    subset = generate_phantom("head", seed=2, modalities=["MR_T2", "CBCT"], **SMALL)
    assert list(subset.images) == ["MR_T2", "CBCT"]
    for key in subset.images:
        assert np.array_equal(arr(subset.images[key]), arr(full.images[key])), key


def test_all_images_share_one_geometry_centred_at_the_origin(head):
    images = [*head.images.values(), head.labels, head.body_mask]
    assert list(head.images) == list(PHANTOM_MODALITIES)
    for image in images:
        assert image.GetSize() == (48, 48, 48) and image.GetSpacing() == (4.0, 4.0, 4.0)
        assert image.GetOrigin() == head.labels.GetOrigin()
        assert image.GetDirection() == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    centre = head.labels.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in head.labels.GetSize()])
    assert np.allclose(centre, 0.0)
    assert all(image.GetPixelID() == sitk.sitkFloat32 for image in head.images.values())
    assert head.labels.GetPixelID() == sitk.sitkUInt8 and head.body_mask.GetPixelID() == sitk.sitkUInt8
    assert set(np.unique(arr(head.labels))) <= set(head.label_names)


# Literature CT numbers (HU) of tissue interiors, with the case-to-case variation of the generator.
HU_RANGES = {
    Label.FAT: (-130, -70),
    Label.MUSCLE: (40, 60),
    Label.CORTICAL_BONE: (1000, 1800),
    Label.CANCELLOUS_BONE: (300, 420),
    Label.CSF: (0, 15),
    Label.GREY_MATTER: (35, 45),
    Label.WHITE_MATTER: (20, 35),
    Label.ARTERY: (35, 50),
    Label.VEIN: (35, 50),
    Label.URINE: (-5, 15),
    Label.EYE: (0, 20),
}


@pytest.mark.parametrize(
    ("anatomy", "n", "mm", "required"),
    [
        ("head", 88, 2.4, {Label.FAT, Label.MUSCLE, Label.CORTICAL_BONE, Label.CANCELLOUS_BONE, Label.CSF}),
        ("pelvis", 64, 6.0, {Label.FAT, Label.MUSCLE, Label.CANCELLOUS_BONE, Label.URINE}),
    ],
)
def test_ct_numbers_inside_each_tissue_match_the_literature(anatomy, n, mm, required):
    case = generate_phantom(anatomy, seed=0, shape=(n, n, n), spacing=(mm, mm, mm), modalities=["CT"])
    labels, ct = arr(case.labels), arr(case.images["CT"])
    checked = set()
    for label, (low, high) in HU_RANGES.items():
        core = ndimage.binary_erosion(labels == label, np.ones((3, 3, 3)))  # away from partial volume
        if core.sum() >= 3:
            assert low <= np.median(ct[core]) <= high, label.name
            checked.add(label)
    assert required <= checked
    if anatomy == "head":
        assert {Label.GREY_MATTER, Label.WHITE_MATTER} <= checked


@pytest.mark.parametrize("fixture", ["head", "pelvis"])
def test_air_is_minus_1000_hu_in_ct_like_images_and_near_zero_in_mr(fixture, request):
    case = request.getfixturevalue(fixture)
    body = arr(case.body_mask).astype(bool)
    far = ndimage.distance_transform_edt(~body) > 4
    for key, image in case.images.items():
        values = arr(image)
        if key.startswith("MR"):
            assert values.min() >= 0, key
            assert values[far].mean() < 0.05 * np.percentile(values[body], 99), key
        else:
            assert np.all(values[far] == -1000.0), key


@pytest.mark.parametrize("fixture", ["head", "pelvis"])
def test_body_mask_covers_all_non_air_tissue(fixture, request):
    case = request.getfixturevalue(fixture)
    labels, body = arr(case.labels), arr(case.body_mask)
    assert set(np.unique(body)) == {0, 1}
    assert np.array_equal(body == 1, labels != Label.BACKGROUND)
    # partial volume may lift the air right next to the skin, never farther out
    assert np.all(ndimage.binary_dilation(body)[arr(case.images["CT"]) > -500])


def test_mr_contrasts_follow_the_tissue_physics(head):
    def mean(key: str, label: Label) -> float:
        return tissue_mean(head, key, label)

    assert mean("MR_T1", Label.WHITE_MATTER) > mean("MR_T1", Label.GREY_MATTER)
    assert mean("MR_T2", Label.CSF) > mean("MR_T2", Label.WHITE_MATTER)
    assert mean("MR_FLAIR", Label.CSF) < mean("MR_FLAIR", Label.WHITE_MATTER)
    assert mean("MR_FLAIR", Label.OEDEMA) > mean("MR_FLAIR", Label.WHITE_MATTER)
    assert mean("MR_T1C", Label.LESION) > 1.3 * mean("MR_T1", Label.LESION)  # gadolinium enhancement


def test_signal_equations_match_their_closed_forms():
    table = tissue_table("head")
    t2w, flair = signal_lut(table, SEQUENCES["MR_T2"]), signal_lut(table, SEQUENCES["MR_FLAIR"])
    wm = TISSUES[Label.WHITE_MATTER]
    expected = wm.pd * (1 - np.exp(-4000.0 / wm.t1)) * np.exp(-100.0 / wm.t2)
    assert t2w[Label.WHITE_MATTER] == pytest.approx(expected, rel=1e-5)
    assert flair[Label.CSF] < 0.01 * flair[Label.WHITE_MATTER]  # the inversion time nulls CSF
    assert signal_lut(table, SEQUENCES["MR_T1"])[Label.BACKGROUND] == 0.0


@pytest.mark.parametrize(("fixture", "tissue"), [("head", Label.WHITE_MATTER), ("pelvis", Label.MUSCLE)])
def test_cbct_is_noisier_and_shifted_compared_with_ct(fixture, tissue, request):
    case = request.getfixturevalue(fixture)
    region = ndimage.binary_erosion(arr(case.labels) == tissue, np.ones((3, 3, 3)))
    ct, cbct = arr(case.images["CT"])[region], arr(case.images["CBCT"])[region]
    assert region.sum() > 50
    assert cbct.std() > 2 * ct.std()
    assert abs(cbct.mean() - ct.mean()) > 10


@pytest.mark.parametrize("fixture", ["head", "pelvis"])
def test_contrast_phases_enhance_arteries_then_veins(fixture, request):
    case = request.getfixturevalue(fixture)

    def mean(key: str, label: Label) -> float:
        return tissue_mean(case, key, label)

    assert mean("CT_ARTERIAL", Label.ARTERY) > mean("CT_VENOUS", Label.ARTERY) > mean("CT", Label.ARTERY) + 50
    assert mean("CT_VENOUS", Label.VEIN) > mean("CT_ARTERIAL", Label.VEIN) > mean("CT", Label.VEIN)
    assert mean("CT_VENOUS", Label.MUSCLE) > mean("CT", Label.MUSCLE)


def test_save_writes_readable_files_with_the_geometry(tmp_path):
    case = generate_phantom("pelvis", seed=1, modalities=["CT", "MR_T1"], **SMALL)
    paths = case.save(tmp_path / "case")
    assert set(paths) == {"CT", "MR_T1", "labels", "body_mask", "phantom"}
    for key in ("CT", "MR_T1", "labels", "body_mask"):
        image = sitk.ReadImage(str(paths[key]))
        assert image.GetSize() == (24, 24, 24) and image.GetSpacing() == (8.0, 8.0, 8.0)
        assert np.allclose(image.GetOrigin(), case.labels.GetOrigin())
    assert np.array_equal(arr(sitk.ReadImage(str(paths["CT"]))), arr(case.images["CT"]))
    assert sitk.ReadImage(str(paths["labels"])).GetPixelID() == sitk.sitkUInt8
    meta = json.loads(paths["phantom"].read_text())
    assert meta["anatomy"] == "pelvis" and meta["seed"] == 1 and meta["shape"] == [24, 24, 24]
    assert meta["spacing"] == [8.0, 8.0, 8.0] and meta["label_names"]["16"] == "urine"
    assert meta["tissues"]["2"]["hu"] < -50 and sorted(meta["files"]) == sorted(p.name for p in paths.values())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"anatomy": "knee"},
        {"modalities": ["CT", "PET"]},
        {"shape": (32, 32)},
        {"shape": (4, 32, 32)},
        {"spacing": (1.0, 0.0, 1.0)},
        {"seed": -1},
    ],
)
def test_bad_arguments_raise_a_value_error(kwargs):
    with pytest.raises(ValueError):
        generate_phantom(**{"shape": (16, 16, 16), **kwargs})
