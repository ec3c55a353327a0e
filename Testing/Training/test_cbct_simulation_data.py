"""With ``data.cbct_simulation`` every case's CBCT is the cone-beam simulation of its own CT, made once and cached."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import SimpleITK as sitk
import yaml

from medtrans_training.config import load_config
from medtrans_training.data import PhantomLoader, SimulatedCBCTLoader, case_loaders, cases_from_spec
from medtrans_training.data.cbct_cache import AIR_HU, CBCTCache, cache_key, case_seed, make_settings
from medtrans_training.data.layouts import discover_cases
from MedTransCore.errors import InputError

from .helpers import tiny_config, write_volume

cone_beam = pytest.importorskip("MedTransCore.phantoms.cone_beam")
pytest.importorskip("itk", reason="the cone-beam simulation needs itk-rtk (the cbct extra)")

SPACING = (4.0, 4.0, 4.0)
SIZE = 24
#: Few views and a small, coarse panel (as YAML gives them: lists): a 24^3 simulation takes well under a second
#: (after the first of a process, which loads ITK). The field of view (~80 mm wide, ~80 mm long) cuts the body.
SETTINGS = {"views": 36, "panel_mm": [120, 120], "pixel_mm": 4.0}


def settings(**changes):
    return make_settings({**SETTINGS, **changes})


def ct_array(seed: int = 0) -> np.ndarray:
    """A water ellipse with a bone rod in air, ``(Z, Y, X)`` int16 HU (real CTs are integer files)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE] - (SIZE - 1) / 2
    body = (x / 11.5) ** 2 + (y / 9.0) ** 2 < 1
    rod = (x - 2 - seed) ** 2 + y**2 < 4
    array = np.where(body, 20.0, -1000.0) + np.where(rod, 900.0, 0.0) + rng.normal(0, 5, body.shape) * body
    return array.astype(np.int16)


def write_cts(root, count: int = 2):
    for index in range(count):
        write_volume(root / f"ct{index}.nii.gz", ct_array(index), spacing=SPACING, origin=(-40.0, 10.0, 5.0))
    return root


def flat_data(tmp_path, **extra) -> dict:
    return {
        "source": "folder",
        "root": str(write_cts(tmp_path / "cts")),
        "layout": "flat",
        "modalities": ["CBCT", "CT"],
        "val_cases": ["ct1"],
        "cbct_simulation": {**SETTINGS, "cache": str(tmp_path / "cache")},
        **extra,
    }


@pytest.fixture
def calls(monkeypatch):
    """Counts the real simulator's runs."""
    made = []
    real = cone_beam.simulate_cbct

    def counting(ct, settings=None, **kwargs):
        made.append(settings)
        return real(ct, settings, **kwargs)

    monkeypatch.setattr(cone_beam, "simulate_cbct", counting)
    return made


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize(), a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == (
        b.GetSize(),
        b.GetSpacing(),
        b.GetOrigin(),
        b.GetDirection(),
    )


def test_a_flat_folder_of_ct_files_is_one_case_per_file_but_never_auto_detected(tmp_path):
    root = write_cts(tmp_path)
    cases = discover_cases(root, "flat")
    assert [(c.case, list(c.images)) for c in cases] == [("ct0", ["CT"]), ("ct1", ["CT"])]
    assert list(discover_cases(root, "flat", flat_modality="CT_VENOUS")[0].images) == ["CT_VENOUS"]
    with pytest.raises(InputError, match="no paired cases"):
        discover_cases(root)


def test_a_folder_of_ct_files_yields_cbct_and_ct_on_the_ct_grid_air_outside_the_field_of_view(tmp_path, calls):
    data = flat_data(tmp_path)
    ((case, load),) = case_loaders(data, "train")
    assert case == "ct0" and isinstance(load, SimulatedCBCTLoader)
    images, mask = load()
    ct_file = sitk.ReadImage(str(tmp_path / "cts" / "ct0.nii.gz"))
    assert set(images) == {"CBCT", "CT"} and mask is None and len(calls) == 1
    assert same_grid(images["CBCT"], ct_file) and same_grid(images["CT"], ct_file)
    assert images["CBCT"].GetPixelID() == sitk.sitkFloat32
    cbct, ct = sitk.GetArrayFromImage(images["CBCT"]), sitk.GetArrayFromImage(images["CT"]).astype(np.float32)
    fov = sitk.GetArrayFromImage(CBCTCache(tmp_path / "cache").get(ct_file, calls[0]).field_of_view) > 0
    assert fov.any() and not fov.all() and (ct_array(0)[~fov] > -500).any()  # the body is cut
    assert np.all(cbct[~fov] == AIR_HU) and np.all(ct[~fov] == AIR_HU)  # the pair agrees where nothing was measured
    assert np.array_equal(ct[fov], ct_array(0)[fov])
    assert not np.allclose(cbct[fov], ct[fov], atol=1.0)  # a simulation, not a copy
    assert np.corrcoef(cbct[fov], ct[fov])[0, 1] > 0.5  # of this anatomy
    assert len(calls) == 1  # the FOV above came from the cache


def test_the_second_load_and_a_pickled_copy_read_the_cache_instead_of_simulating(tmp_path, calls):
    ((_, load),) = case_loaders(flat_data(tmp_path), "train")
    first, _ = load()
    copy = pickle.loads(pickle.dumps(load))  # what a DataLoader worker or a DDP rank gets
    assert copy == load
    second, _ = copy()
    assert len(calls) == 1
    for key in first:
        assert np.array_equal(sitk.GetArrayFromImage(first[key]), sitk.GetArrayFromImage(second[key]))
        assert same_grid(first[key], second[key])
    (entry,) = (tmp_path / "cache").glob("*.json")
    record = json.loads(entry.read_text())
    assert record["settings"]["views"] == 36 and record["key"] == entry.stem


def test_each_case_has_its_own_seed_the_same_in_every_run(tmp_path):
    data = flat_data(tmp_path, val_cases=[])
    seeds = {case: load.settings["seed"] for case, load in case_loaders(data, "train")}
    assert seeds == {case: load.settings["seed"] for case, load in case_loaders(data, "train")}
    assert seeds["ct0"] != seeds["ct1"] and seeds["ct0"] == case_seed(0, "ct0")
    reseeded = {**data, "cbct_simulation": {**data["cbct_simulation"], "seed": 7}}
    assert case_loaders(reseeded, "train")[0][1].settings["seed"] == case_seed(7, "ct0") != seeds["ct0"]


def test_a_changed_setting_or_ct_makes_a_new_cache_entry(tmp_path, calls):
    cache = CBCTCache(tmp_path / "cache")
    ct = sitk.ReadImage(str(write_cts(tmp_path / "cts", 1) / "ct0.nii.gz"))
    changed_ct = sitk.Image(ct)
    changed_ct[3, 4, 5] = 500
    moved_ct = sitk.Image(ct)
    moved_ct.SetOrigin((0.0, 0.0, 0.0))
    keys = {
        cache_key(ct, settings()),
        cache_key(ct, settings(views=40)),
        cache_key(changed_ct, settings()),
        cache_key(moved_ct, settings()),
    }
    assert len(keys) == 4
    cache.get(ct, settings())
    cache.get(ct, settings(views=40))
    cache.get(changed_ct, settings())
    cache.get(ct, settings())
    assert len(calls) == 3
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3
    assert not list((tmp_path / "cache").glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize("broken", ["image", "json"])
def test_a_corrupt_cache_file_is_simulated_again(tmp_path, calls, broken):
    cache = CBCTCache(tmp_path / "cache")
    ct = sitk.ReadImage(str(write_cts(tmp_path / "cts", 1) / "ct0.nii.gz"))
    expected = sitk.GetArrayFromImage(cache.get(ct, settings()).image)
    image_path, _, meta_path = cache.paths(cache_key(ct, settings()))
    path = image_path if broken == "image" else meta_path
    path.write_bytes(path.read_bytes()[:100])  # a truncated file, as a killed writer without os.replace would leave
    again = cache.get(ct, settings())
    assert len(calls) == 2
    assert np.array_equal(sitk.GetArrayFromImage(again.image), expected)  # the same seed: the same scan
    cache.get(ct, settings())
    assert len(calls) == 2  # repaired


def test_phantom_cases_with_cbct_simulation_get_a_cbct_unlike_the_image_space_phantom_one(tmp_path):
    data = {
        "source": "phantom",
        "modalities": ["CBCT", "CT"],
        "phantom": {"shape": [SIZE] * 3, "spacing": list(SPACING), "train_seeds": [0, 1]},
        "cbct_simulation": {**SETTINGS, "cache": str(tmp_path / "cache")},
    }
    ((case, load),) = case_loaders(data, "train")
    assert case == "phantom-head-0000" and load.inner.modalities == ("CT",)
    simulated, _ = load()
    plain, _ = PhantomLoader("head", 0, (SIZE,) * 3, SPACING, ("CBCT", "CT"))()
    assert same_grid(simulated["CBCT"], plain["CBCT"])
    fov = sitk.GetArrayFromImage(simulated["CT"]) != AIR_HU
    difference = np.abs(sitk.GetArrayFromImage(simulated["CBCT"]) - sitk.GetArrayFromImage(plain["CBCT"]))
    assert float(difference[fov].mean()) > 5.0
    assert np.array_equal(sitk.GetArrayFromImage(simulated["CT"])[fov], sitk.GetArrayFromImage(plain["CT"])[fov])


def test_real_cts_and_phantoms_share_one_run_through_extra_sources(tmp_path):
    phantom = {"source": "phantom", "phantom": {"shape": [SIZE] * 3, "train_seeds": [0, 2], "val_seeds": [9, 10]}}
    data = flat_data(tmp_path, extra_sources=[phantom, {**phantom, "cbct_simulation": None}])
    with pytest.raises(InputError, match="phantom-head-0000"):
        case_loaders(data, "train")  # one case id from two sources
    data["extra_sources"][1]["phantom"] = {"anatomy": "pelvis", "train_seeds": [0, 1]}
    loaders = dict(case_loaders(data, "train"))
    assert list(loaders) == ["ct0", "phantom-head-0000", "phantom-head-0001", "phantom-pelvis-0000"]
    assert isinstance(loaders["phantom-head-0001"], SimulatedCBCTLoader)
    assert isinstance(loaders["phantom-pelvis-0000"], PhantomLoader)  # its own image-space CBCT
    assert loaders["phantom-pelvis-0000"].modalities == ("CBCT", "CT")
    assert [case for case, _ in case_loaders(data, "val")] == [
        "ct1",
        "phantom-head-0009",
        "phantom-pelvis-1000",
        "phantom-pelvis-1001",
    ]


def test_a_run_config_with_cbct_simulation_passes_the_key_check_and_feeds_evaluation(tmp_path):
    data = flat_data(tmp_path, extra_sources=[{"source": "phantom", "phantom": {"train_seeds": [0, 1]}}])
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path, data=data)))
    assert load_config(path)["data"]["cbct_simulation"]["views"] == 36
    ((case, load),) = cases_from_spec(str(path), ["CBCT", "CT"], split="val", cases=["ct1"])
    assert case == "ct1" and isinstance(load, SimulatedCBCTLoader)
    with pytest.raises(
        ValueError, match="unknown key data.cbct_simulation.viewz;.*did you mean data.cbct_simulation.views?"
    ):
        load_config(path, ["data.cbct_simulation.viewz=3"])
    with pytest.raises(ValueError, match=r"unknown key data.extra_sources\[0\].phantom.seeds"):
        load_config(path, ["data.extra_sources=[{source: phantom, phantom: {seeds: [0, 1]}}]"])


def test_cbct_simulation_without_cbct_among_the_modalities_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="must list CBCT"):
        case_loaders(flat_data(tmp_path, modalities=["CT", "MR_T1"]), "train")
