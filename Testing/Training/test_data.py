"""Training items: the inference normalisation and body mask, random pairs and patches, held-out splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medtrans_training.config import load_config, parse_override
from medtrans_training.data import build_datasets, case_loaders, cases_from_spec
from medtrans_training.data.dataset import RandMRScaled
from MedTransCore.errors import InputError
from MedTransCore.modalities import normalisation_params, normalise
from MedTransCore.preprocess import body_mask

from .helpers import tiny_config, write_simple_cases


def test_training_items_hold_normalised_patches_with_modality_indices_and_a_mask(tmp_path):
    data = tiny_config(write_simple_cases(tmp_path / "data"))["data"]
    train, val = build_datasets(data, seed=0)
    assert len(train) == 2 and len(val) == 4  # case2 is held out (4 validation patches by default)
    item = train[0]
    assert item["source"].shape == item["target"].shape == item["mask"].shape == (1, 16, 16, 16)
    assert item["source"].dtype == torch.float32 and type(item["source"]) is torch.Tensor
    assert set(torch.unique(item["mask"]).tolist()) <= {0.0, 1.0} and item["mask"].sum() > 0
    assert data["modalities"][item["source_modality"]] == item["source_key"]
    assert data["modalities"][item["target_modality"]] == item["target_key"]
    assert item["source_key"] != item["target_key"]
    assert -1.5 < float(item["source"].min()) and float(item["source"].max()) < 1.5


def test_a_whole_volume_item_equals_the_inference_normalisation_of_the_source(tmp_path):
    root = write_simple_cases(tmp_path / "data", count=1)
    data = {
        **tiny_config(root)["data"],
        "patch": [20, 20, 20],
        "val_cases": [],
        "augment": False,
        "pairs": [["MR_T1", "MR_T2"]],
    }
    item = build_datasets(data)[0][0]
    image = sitk.ReadImage(str(root / "case0" / "t1.nii.gz"), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    mask = sitk.GetArrayFromImage(body_mask(image, "MR_T1")).astype(bool)
    expected = normalise(array, normalisation_params(array, "MR_T1", mask))
    np.testing.assert_allclose(item["source"][0].numpy(), expected, atol=1e-5)
    assert item["mask"][0].numpy().astype(bool).sum() >= mask.sum()  # union of both contrasts' masks


def test_phantom_cases_are_simulated_on_the_fly_for_any_pair_and_repeat_with_the_seed(tmp_path):
    data = {
        "source": "phantom",
        "modalities": ["CT", "CBCT", "MR_T2"],
        "spacing": [6.0, 6.0, 6.0],
        "patch": [16, 16, 16],
        "phantom": {"anatomy": "head", "shape": [24, 24, 24], "train_seeds": [0, 2], "val_seeds": [50, 51]},
        "repeats": 6,
    }
    train, val = build_datasets(data, seed=3)
    pairs = {(item["source_key"], item["target_key"]) for item in (train[i] for i in range(len(train)))}
    assert len(pairs) >= 3 and all(s != t for s, t in pairs)
    assert [case for case, _ in case_loaders(data, "val")] == ["phantom-head-0050"]
    first, second = build_datasets(data, seed=3)[0][0], build_datasets(data, seed=3)[0][0]
    torch.testing.assert_close(first["source"], second["source"])


def test_held_out_cases_never_reach_the_training_set(tmp_path):
    root = write_simple_cases(tmp_path / "data", count=4)
    data = {**tiny_config(root)["data"], "val_cases": [], "val_fraction": 0.5}
    assert [c for c, _ in case_loaders(data, "train")] == ["case0", "case1"]
    assert [c for c, _ in case_loaders(data, "val")] == ["case2", "case3"]
    with pytest.raises(InputError, match="val_cases not found"):
        case_loaders({**data, "val_cases": ["case9"]}, "train")


def test_evaluation_data_is_named_by_folder_run_config_or_phantom_seeds(tmp_path):
    root = write_simple_cases(tmp_path / "data")
    assert [c for c, _ in cases_from_spec(str(root), ["MR_T1", "MR_T2"])] == ["case0", "case1", "case2"]
    (tmp_path / "run.json").write_text(json.dumps(tiny_config(root)))
    assert [c for c, _ in cases_from_spec(str(tmp_path / "run.json"), ["MR_T1", "MR_T2"])] == ["case2"]
    phantoms = cases_from_spec("phantom:head:7-9", ["CT", "MR_T1"], [6.0, 6.0, 6.0])
    assert [c for c, _ in phantoms] == ["phantom-head-0007", "phantom-head-0008"]
    with pytest.raises(InputError, match="phantom:head"):
        cases_from_spec("phantom:head", ["CT"])


def test_a_config_file_takes_overrides_and_names_its_mistakes(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("stage: unet\ndata: {modalities: [CT, CBCT]}\ntrain: {steps: 5}\n")
    config = load_config(path, ["train.steps=7", "model.loss.gan=0.5"])
    assert config["train"]["steps"] == 7 and config["train"]["batch_size"] == 2  # default filled in
    assert config["model"] == {"loss": {"gan": 0.5}}
    assert parse_override("data.pairs=[[CT, CBCT]]") == {"data": {"pairs": [["CT", "CBCT"]]}}
    path.write_text("stage: unet\ndata: {modalities: [CT]}\ntraining: {}\n")
    with pytest.raises(InputError, match="unknown section"):
        load_config(path)
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_every_target_of_a_case_can_come_with_an_item(tmp_path):
    root = write_simple_cases(tmp_path / "data", count=3)
    data = {**tiny_config(root)["data"], "modalities": ["MR_T1", "MR_T2", "MR_PD"], "all_targets": True}
    item = build_datasets(data)[0][0]
    assert item["targets"].shape == (3, 16, 16, 16) and item["available"].tolist() == [True, True, False]
    index = data["modalities"].index(item["target_key"])
    torch.testing.assert_close(item["targets"][index : index + 1], item["target"])
    assert bool((item["targets"][2] == -1.0).all())  # a missing modality is background
    with pytest.raises(InputError, match="unknown data.augment"):
        build_datasets({**data, "augment": {"intensity_shift": 0.1}})


def test_intensity_augmentation_rescales_mr_sources_about_zero_signal_and_leaves_ct_in_hu():
    augment = RandMRScaled(factor=0.2, prob=1.0).set_random_state(seed=0)
    source = torch.tensor([[-1.0, 0.0, 1.0]])
    mr = augment({"source": source, "source_key": "MR_T2"})["source"]
    assert mr[0, 0] == -1.0 and mr[0, 1] != 0.0 and (mr[0, 2] + 1) == pytest.approx(2 * (mr[0, 1] + 1))
    assert augment({"source": source, "source_key": "CBCT"})["source"] is source
