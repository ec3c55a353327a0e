"""The abdomen phantom: organ CT numbers per contrast phase against the literature, the seeded bolus, physics."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from MedTransCore.errors import InputError
from MedTransCore.phantoms import ANATOMIES, PHANTOM_MODALITIES, Label, generate_phantom
from MedTransCore.phantoms.contrast import Bolus, enhancement
from MedTransCore.phantoms.tissues import tissue_table

SMALL = {"shape": (48, 48, 32), "spacing": (7.0, 7.0, 7.0)}
CT_KEYS = ["CT", "CT_ARTERIAL", "CT_VENOUS"]
PHASE = {"CT": "hu", "CT_ARTERIAL": "arterial", "CT_VENOUS": "venous"}
# Literature CT numbers (HU) per phase (sources in MedTransCore/phantoms/contrast.py and tissues.py), widened by
# the patient-to-patient variation of dose (+-10 %) and scan time that the generator draws.
RANGES = {
    "CT": {
        Label.LIVER: (50, 70),
        Label.SPLEEN: (40, 55),
        Label.KIDNEY_CORTEX: (25, 45),
        Label.PANCREAS: (35, 55),
        Label.ARTERY: (35, 50),
        Label.PORTAL_VEIN: (35, 50),
        Label.MUSCLE: (40, 60),
        Label.FAT: (-130, -70),
    },
    "CT_ARTERIAL": {
        Label.ARTERY: (250, 350),
        Label.LIVER: (55, 90),  # barely: the hepatic artery brings ~25 % of its blood
        Label.KIDNEY_CORTEX: (150, 250),
        Label.SPLEEN: (100, 140),
        Label.PANCREAS: (100, 150),
        Label.PORTAL_VEIN: (80, 130),
    },
    "CT_VENOUS": {
        Label.ARTERY: (140, 200),
        Label.LIVER: (100, 150),
        Label.PORTAL_VEIN: (150, 200),
        Label.SPLEEN: (105, 140),
        Label.KIDNEY_CORTEX: (140, 210),
        Label.KIDNEY_MEDULLA: (130, 200),
        Label.VEIN: (130, 180),
    },
}


def arr(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def organ_hu(case, key: str, label: Label) -> float:
    """The case's noise-free CT number of ``label`` in ``key``: unenhanced value + the phase's enhancement."""
    t = case.tissues[str(int(label))]
    return t["hu"] + (t[PHASE[key]] if key != "CT" else 0.0)


def core_median(case, key: str, label: Label) -> float:
    """Median of image ``key`` in the voxels of ``label`` whose neighbours are all ``label`` (no partial volume)."""
    core = ndimage.binary_erosion(arr(case.labels) == label, np.ones((3, 3, 3)))
    assert core.sum() >= 3, label.name
    return float(np.median(arr(case.images[key])[core]))


@pytest.fixture(scope="module")
def cases():
    return [generate_phantom("abdomen", seed=seed, modalities=CT_KEYS, **SMALL) for seed in range(6)]


@pytest.fixture(scope="module")
def fine():
    """A finer in-plane grid, where the aorta, liver and spleen have voxels free of partial volume."""
    return generate_phantom("abdomen", seed=11, shape=(96, 72, 20), spacing=(4.0, 4.0, 8.0))


def test_the_abdomen_is_a_phantom_anatomy_with_every_modality(fine):
    assert "abdomen" in ANATOMIES
    assert list(fine.images) == list(PHANTOM_MODALITIES)
    labels = set(np.unique(arr(fine.labels)))
    organs = {Label.LIVER, Label.SPLEEN, Label.KIDNEY_CORTEX, Label.KIDNEY_MEDULLA, Label.PANCREAS, Label.PORTAL_VEIN}
    assert organs | {Label.ARTERY, Label.VEIN, Label.BOWEL, Label.AIR_CAVITY, Label.CORTICAL_BONE} <= labels
    assert labels <= set(fine.label_names)


@pytest.mark.parametrize("key", CT_KEYS)
def test_every_organ_of_every_seed_is_inside_its_literature_range_in_each_phase(cases, key):
    for case in cases:
        for label, (low, high) in RANGES[key].items():
            assert low <= organ_hu(case, key, label) <= high, (case.seed, label.name)


def test_the_renal_cortex_outshines_the_medulla_in_the_arterial_phase_and_matches_it_in_the_venous(cases):
    for case in cases:
        arterial = organ_hu(case, "CT_ARTERIAL", Label.KIDNEY_CORTEX) - organ_hu(
            case, "CT_ARTERIAL", Label.KIDNEY_MEDULLA
        )
        venous = organ_hu(case, "CT_VENOUS", Label.KIDNEY_CORTEX) - organ_hu(case, "CT_VENOUS", Label.KIDNEY_MEDULLA)
        assert arterial > 80 and abs(venous) < 40, case.seed


def test_the_images_show_the_organ_values_in_their_cores(fine):
    for key in CT_KEYS:  # noise and texture around the case's value; the value itself is checked above
        for label in (Label.ARTERY, Label.LIVER, Label.SPLEEN, Label.FAT, Label.MUSCLE):
            assert abs(core_median(fine, key, label) - organ_hu(fine, key, label)) < 10, (key, label.name)
    assert 250 <= core_median(fine, "CT_ARTERIAL", Label.ARTERY) <= 350
    assert 100 <= core_median(fine, "CT_VENOUS", Label.LIVER) <= 150
    labels = arr(fine.labels)  # the kidneys, too thin for a core at 4 mm: their mean over every voxel
    cortex, medulla = labels == Label.KIDNEY_CORTEX, labels == Label.KIDNEY_MEDULLA
    art, ven = arr(fine.images["CT_ARTERIAL"]), arr(fine.images["CT_VENOUS"])
    assert art[cortex].mean() > art[medulla].mean() + 30
    assert abs(ven[cortex].mean() - ven[medulla].mean()) < 30


def test_the_spleen_is_banded_in_the_arterial_phase_only(fine):
    def excess(key: str) -> float:
        """SD of the spleen beyond that of the liver in the same image (the same noise): its banding."""
        image = arr(fine.images[key])
        spleen, liver = (
            ndimage.binary_erosion(arr(fine.labels) == t, np.ones((3, 3, 3))) for t in (Label.SPLEEN, Label.LIVER)
        )
        return float(np.sqrt(max(image[spleen].var() - image[liver].var(), 0.0)))

    assert excess("CT_ARTERIAL") > 8 and excess("CT_VENOUS") < 6 and excess("CT") < 6


def test_seeds_draw_different_doses_and_scan_times(cases):
    boluses = [case.info["contrast"] for case in cases]
    assert len({b["dose_factor"] for b in boluses}) == len(cases)
    assert len({b["arterial_s"] for b in boluses}) > 1 and len({b["venous_s"] for b in boluses}) > 1
    aortas = [organ_hu(case, "CT_ARTERIAL", Label.ARTERY) for case in cases]
    assert max(aortas) - min(aortas) > 10


def test_a_later_arterial_scan_moves_the_values_towards_the_venous_phase():
    early, late = (
        Bolus(1.0, 32.0, 70.0).apply(tissue_table("abdomen")),
        Bolus(1.0, 38.0, 70.0).apply(tissue_table("abdomen")),
    )
    for label in (Label.LIVER, Label.KIDNEY_MEDULLA, Label.PORTAL_VEIN):
        assert late[label].arterial > early[label].arterial, label.name
    assert late[Label.ARTERY].arterial < early[Label.ARTERY].arterial  # past the aortic peak
    double = Bolus(2.0, 35.0, 70.0).apply(tissue_table("abdomen"))
    assert double[Label.LIVER].venous == pytest.approx(2 * enhancement(Label.LIVER, 70.0))


def test_the_same_seed_gives_identical_arrays():
    a, b = (generate_phantom("abdomen", seed=4, shape=(24, 24, 16), spacing=(10.0, 10.0, 10.0)) for _ in range(2))
    assert np.array_equal(arr(a.labels), arr(b.labels)) and a.info == b.info
    for key in PHANTOM_MODALITIES:
        assert np.array_equal(arr(a.images[key]), arr(b.images[key])), key


def test_the_non_contrast_phase_is_the_ct_modality(cases):
    alone = generate_phantom("abdomen", seed=cases[0].seed, modalities=["CT"], **SMALL)
    assert np.array_equal(arr(alone.images["CT"]), arr(cases[0].images["CT"]))
    assert alone.info["contrast"] == cases[0].info["contrast"]
    assert 30 <= organ_hu(alone, "CT", Label.ARTERY) <= 50


def test_bowel_gas_is_dark_and_bone_bright(cases):
    for case in cases:
        labels, ct = arr(case.labels), arr(case.images["CT"])
        assert np.median(ct[labels == Label.AIR_CAVITY]) < -500, case.seed
        assert ct[labels == Label.CORTICAL_BONE].mean() > 300, case.seed
        assert ct[labels == Label.LUNG].mean() < -500, case.seed


def test_mr_follows_the_relaxation_of_liver_and_spleen(fine):
    assert core_median(fine, "MR_T1", Label.LIVER) > core_median(fine, "MR_T1", Label.SPLEEN)  # T1 586 vs 1057 ms
    assert core_median(fine, "MR_T2", Label.SPLEEN) > core_median(fine, "MR_T2", Label.LIVER)  # T2 79 vs 46 ms


def test_an_unknown_modality_names_what_the_abdomen_offers():
    with pytest.raises(InputError, match="unknown phantom modality 'PET'.*CT_ARTERIAL.*CT_VENOUS"):
        generate_phantom("abdomen", modalities=["CT", "PET"], shape=(16, 16, 16))
    with pytest.raises(InputError, match="abdomen"):
        generate_phantom("thorax", shape=(16, 16, 16))


def test_the_command_line_writes_an_abdomen_phantom(tmp_path):
    from .test_cli import run_cli

    args = ("phantom", "--anatomy", "abdomen", "--seed", "3", "--out", tmp_path, "--size", "24", "--spacing", "10")
    assert run_cli(*args) == 0
    for key in ("CT", "CT_ARTERIAL", "CT_VENOUS", "MR_T2", "CBCT", "labels"):
        assert sitk.ReadImage(str(tmp_path / f"{key}.nii.gz")).GetSize() == (24, 24, 24)
