"""Training data honour ``data.intensity_window`` (clipped to the window, as inference normalises them), a bad window
is refused before any case loads, and export records the window in the bundle's normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from medtrans_training.cli import main as train_main
from medtrans_training.config import load_config
from medtrans_training.data import build_datasets, intensity_windows
from medtrans_training.export import bundle_metadata, export_run
from MedTransCore.bundles import validate_metadata
from MedTransCore.errors import InputError
from MedTransCore.modalities import normalisation_params, normalise
from MedTransCore.translate import translate_image

from .helpers import tiny_config, write_volume

SIZE = 20
W400_L0 = [-200, 200]


def ct_arrays(seed: int) -> dict[str, np.ndarray]:
    """Air, soft tissue, a bone ring and a metal spot; the arterial phase adds 120 HU to a vessel."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:SIZE, :SIZE, :SIZE] - (SIZE - 1) / 2
    r = np.sqrt(x**2 + y**2 + z**2)
    ct = np.where(r < 8, 40.0 + rng.normal(0, 5, r.shape), -1000.0)
    ct = np.where((r > 5) & (r < 6.5), 1200.0, ct)
    ct[10, 10, 14:16] = 3000.0
    arterial = np.where(r < 2.5, ct + 120.0, ct)
    return {"CT": ct, "CT_ARTERIAL": arterial}


def write_manifest(root, count: int = 3):
    lines = ["case,CT,CT_ARTERIAL"]
    for index in range(count):
        for key, array in ct_arrays(index).items():
            write_volume(root / f"case{index}" / f"{key}.nii.gz", array)
        lines.append(f"case{index},case{index}/CT.nii.gz,case{index}/CT_ARTERIAL.nii.gz")
    (root / "cases.csv").write_text("\n".join(lines) + "\n")
    return root / "cases.csv"


def data_config(tmp_path, **extra) -> dict:
    return {
        "source": "manifest",
        "manifest": str(write_manifest(tmp_path / "data")),
        "modalities": ["CT", "CT_ARTERIAL"],
        "pairs": [["CT", "CT_ARTERIAL"]],
        "spacing": [2.0, 2.0, 2.0],
        "patch": [SIZE] * 3,
        "augment": False,
        "val_cases": ["case1"],
        **extra,
    }


def test_training_volumes_are_clipped_to_the_run_window_as_inference_normalises_them(tmp_path):
    data = data_config(tmp_path, intensity_window={"CT": W400_L0, "CT_ARTERIAL": W400_L0})
    item = build_datasets(data)[0][0]
    arrays = ct_arrays(0)
    for key in ("source", "target"):
        expected = np.clip((arrays[item[f"{key}_key"]] + 200.0) / 200.0 - 1.0, -1.0, 1.0)
        np.testing.assert_allclose(item[key][0].numpy(), expected, rtol=0, atol=1e-5)
    enhanced = (item["target"] - item["source"])[0].numpy()
    assert enhanced.max() == pytest.approx(0.6, abs=0.05)  # 120 HU in a W400 window


def test_a_run_without_a_window_keeps_the_default_normalisation(tmp_path):
    item = build_datasets(data_config(tmp_path))[0][0]
    array = ct_arrays(0)["CT"]
    np.testing.assert_allclose(
        item["source"][0].numpy(), normalise(array, normalisation_params(array, "CT")), atol=1e-5
    )


def test_slice_stacks_honour_the_run_window_too(tmp_path):
    data = data_config(
        tmp_path, sampling="slices", patch=None, context=0, intensity_window={"CT": W400_L0, "CT_ARTERIAL": W400_L0}
    )
    item = build_datasets(data)[0][0]
    images = item["images"].numpy()
    assert images.min() == -1.0 and images.max() == 1.0  # air and bone at the window's edges
    inside = (images > -1.0) & (images < 1.0)
    assert inside.any()


BAD = {
    "an MR modality": ({"MR_T1": [0, 500]}, "MR_T1 is an MR modality"),
    "a window with low above high": ({"CT": [200, -200], "CT_ARTERIAL": W400_L0}, "low < high"),
    "a modality the run lacks": ({"CT": W400_L0, "CT_ARTERIAL": W400_L0, "CBCT": W400_L0}, "not among data.modalities"),
    "one side of a pair": ({"CT": W400_L0}, "but not for CT_ARTERIAL"),
}


@pytest.mark.parametrize("windows, words", BAD.values(), ids=BAD.keys())
def test_a_bad_run_window_is_refused_before_any_case_loads(tmp_path, windows, words):
    data = {"modalities": ["CT", "CT_ARTERIAL"], "pairs": [["CT", "CT_ARTERIAL"]], "intensity_window": windows}
    with pytest.raises(InputError, match=words):
        intensity_windows(data)


def test_a_run_window_cannot_meet_mr_or_histogram_standardisation():
    data = {"modalities": ["CT", "MR_T1"], "intensity_window": {"CT": W400_L0}}
    with pytest.raises(InputError, match="-> (CT|MR_T1) pairs MR with a windowed CT-like modality"):
        intensity_windows(data)
    data = {"modalities": ["CT", "CBCT"], "standardise": "histogram-matching"}
    with pytest.raises(InputError, match="cannot be combined with data.standardise"):
        intensity_windows({**data, "intensity_window": {"CT": W400_L0, "CBCT": [-300, 300]}})


def test_a_run_config_may_set_the_window_and_export_records_it_next_to_the_mr_scheme(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        "stage: unet\n"
        "data: {modalities: [CT, CT_ARTERIAL], normalisation: brain_percentiles,\n"
        "       intensity_window: {CT: [-200, 200], CT_ARTERIAL: [-200, 600]}}\n"
    )
    config = load_config(path)
    meta = bundle_metadata(config, {"network": {}}, "unet", name="windowed", export={})
    normalisation = meta["normalisation"]
    assert normalisation["intensity_window"] == {"CT": [-200.0, 200.0], "CT_ARTERIAL": [-200.0, 600.0]}
    assert normalisation["mr_scheme"] == "brain_percentiles"
    meta.update(pairs=[["CT", "CT_ARTERIAL"]], schema_version=1, weights={})
    validate_metadata(meta)  # the bundle would load
    plain = bundle_metadata({**config, "data": {"modalities": ["CT"]}}, {"network": {}}, "unet", name="p", export={})
    assert "intensity_window" not in plain["normalisation"]


def test_whole_volume_training_items_match_the_translate_paths_windowed_input(tmp_path):
    """The same clip at the same place (before resampling) as ``MedTransCore.translate``."""
    image = sitk.GetImageFromArray(ct_arrays(0)["CT"].astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    from medtrans_training.data.dataset import normalised_on_grid
    from MedTransCore.translate import _normalised_image

    trained, _ = normalised_on_grid(image, "CT", [2.0, 2.0, 2.0], window=(-200.0, 200.0))
    params = normalisation_params(np.zeros(1), "CT", window=(-200.0, 200.0))
    inferred = _normalised_image(image, params, "zero_to_percentile", clip=True)
    np.testing.assert_allclose(sitk.GetArrayFromImage(trained), sitk.GetArrayFromImage(inferred), rtol=0, atol=1e-6)


def test_a_run_trained_in_a_window_exports_a_bundle_that_passes_bone_air_and_metal_through(tmp_path):
    windows = {"CT": W400_L0, "CT_ARTERIAL": [-200, 400]}
    data = data_config(tmp_path, intensity_window=windows, patch=[16, 16, 16], test_cases=["case2"])
    config = {**tiny_config(tmp_path, train={"steps": 2}), "data": data}
    (tmp_path / "run.json").write_text(json.dumps(config))
    train_main(["train", str(tmp_path / "run.json"), "--run-dir", str(tmp_path / "run"), "--device", "cpu"])
    bundle = export_run(tmp_path / "run", tmp_path / "bundle", keep_all_pairs=True, device="cpu")
    assert bundle.metadata["normalisation"]["intensity_window"] == {
        "CT": [-200.0, 200.0],
        "CT_ARTERIAL": [-200.0, 400.0],
    }
    image = sitk.GetImageFromArray(ct_arrays(5)["CT"].astype(np.float32))
    image.SetSpacing((2.0, 2.0, 2.0))
    result = sitk.GetArrayFromImage(translate_image(image, "CT", "CT_ARTERIAL", model=bundle.path, device="cpu").image)
    source = sitk.GetArrayFromImage(image)
    outside = (source < -200) | (source > 200)
    np.testing.assert_array_equal(result[outside], source[outside])
    assert result[~outside].min() >= -200 and result[~outside].max() <= 400
