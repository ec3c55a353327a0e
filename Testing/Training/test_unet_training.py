"""The ``unet`` stage end to end: train, resume, export (pairs filtered against histogram matching), evaluate,
and translate with the exported bundle through MedTransCore exactly as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import SimpleITK as sitk
import torch

from medtrans_training.cli import main as train_main
from medtrans_training.export import export_run
from MedTransCore.bundles import load_bundle
from MedTransCore.errors import BundleError
from MedTransCore.translate import translate_image

from .helpers import head_arrays, tiny_config, tiny_unet_bundle, write_simple_cases, write_volume


def write_config(tmp_path, config) -> str:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    return str(path)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def data_root(tmp_path):
    return write_simple_cases(tmp_path / "data", count=4)


def exportable(config: dict) -> dict:
    """``config`` with case3 as its test case (export reports numbers on test cases only)."""
    config["data"]["test_cases"] = ["case3"]
    return config


def test_a_tiny_gan_run_trains_logs_resumes_and_exports_a_bundle_that_translates_on_the_source_geometry(
    tmp_path, data_root, capsys
):
    config = tiny_config(
        data_root,
        data={"test_cases": ["case3"]},
        model={"loss": {"gan": 0.1}, "discriminator": {"channels": 4, "num_layers_d": 2}},
        train={"lr_schedule": "cosine"},
    )
    run = tmp_path / "run"
    train_main(["train", write_config(tmp_path, config), "--run-dir", str(run), "--device", "cpu"])
    logs = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in logs if r["split"] == "train"] == [1, 2, 3]
    assert {"loss_l1", "loss_adv", "loss_d"} <= set(logs[0]) and any(r["split"] == "val" for r in logs)
    rates = [r["lr"] for r in logs if r["split"] == "train"]
    assert rates[0] == pytest.approx(2e-4) and rates[0] > rates[1] > rates[2]  # cosine decay from train.lr
    first = torch.load(run / "checkpoint.pt", weights_only=True)
    assert first["step"] == 3 and set(first["modules"]) == {"generator", "discriminator"}

    with pytest.raises(SystemExit):  # a finished run is never silently overwritten
        train_main(["train", write_config(tmp_path, config), "--run-dir", str(run)])
    assert "already holds a trained run" in capsys.readouterr().err

    train_main(["train", "--resume", str(run), "--set", "train.steps=5", "--device", "cpu"])
    resumed = torch.load(run / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 5
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if r["split"] == "train"][-2:] == [4, 5]
    assert len(json.loads((run / "run.json").read_text())["commands"]) == 2

    bundle = export_run(run, tmp_path / "bundle", keep_all_pairs=True, device="cpu")
    meta = bundle.metadata
    assert (
        meta["family"] == "unet"
        and meta["name"] == "tiny-unet"
        and meta["pairs"] == [["MR_T1", "MR_T2"], ["MR_T2", "MR_T1"]]
    )
    assert meta["training"]["steps"] == 5 and meta["training"]["device"]["type"] == "cpu"
    assert meta["training"]["commands"][1].startswith("medtrans-train train --resume")
    assert meta["metrics"]["validation"]["cases"] == ["case2"] and meta["metrics"]["test"]["cases"] == ["case3"]
    assert meta["limitations"] == "test model" and meta["training"]["train_cases"] == ["case0", "case1"]
    assert set(meta["metrics"]["test"]["summary"]["MR_T1->MR_T2"]) == {"tiny-unet", "identity", "histogram-matching"}
    assert meta["network"]["architecture"] == "unet" and meta["network"]["num_modalities"] == 2

    source = sitk.ReadImage(str(data_root / "case2" / "t1.nii.gz"), sitk.sitkFloat32)
    source.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    result = translate_image(source, "MR_T1", "MR_T2", model=bundle.path, device="cpu")
    assert result.image.GetSize() == source.GetSize() and result.image.GetDirection() == source.GetDirection()
    assert result.settings["family"] == "unet" and result.settings["model"] == "tiny-unet"


def test_a_model_that_only_equals_the_source_lists_no_pair(tmp_path):
    # T2 is an exact copy of T1, PD is a different contrast; the model is an exact identity (a residual UNet whose
    # output layer starts at zero, trained with a learning rate of 0). Histogram matching is worse than it on
    # T1 <-> T2, but identity is as good, so it beats the baselines nowhere: nothing is listed, nothing written.
    root = write_simple_cases(tmp_path / "data", count=4, names=("t1", "pd"))
    for case in ("case0", "case1", "case2", "case3"):
        (root / case / "t2.nii.gz").write_bytes((root / case / "t1.nii.gz").read_bytes())
    network = {**tiny_config(root)["model"]["network"], "residual": True, "per_target_outputs": True}
    config = tiny_config(
        root,
        data={"modalities": ["MR_T1", "MR_T2", "MR_PD"], "all_targets": True, "test_cases": ["case3"]},
        model={"network": network, "zero_init_output": True},
        train={"steps": 1, "lr": 0.0},
    )
    run = tmp_path / "run"
    train_main(["train", write_config(tmp_path, config), "--run-dir", str(run), "--device", "cpu"])

    with pytest.raises(BundleError, match="no pair can be listed") as error:
        export_run(run, tmp_path / "bundle", device="cpu")
    assert "MR_T1->MR_T2: validation (1 case): does not beat identity on MAE" in str(error.value)
    assert not (tmp_path / "bundle").exists()


def test_a_per_target_network_without_all_targets_is_a_config_error(tmp_path, data_root, capsys):
    config = tiny_config(data_root, model={"network": {"per_target_outputs": True}})
    with pytest.raises(SystemExit):
        train_main(["train", write_config(tmp_path, config), "--run-dir", str(tmp_path / "run")])
    assert "needs data.all_targets: true" in capsys.readouterr().err


def test_a_histogram_standardised_run_exports_a_bundle_that_carries_its_reference_and_translates(tmp_path, data_root):
    config = exportable(
        tiny_config(data_root, data={"standardise": "histogram-matching"}, model={"zero_init_output": True})
    )
    config["model"]["network"]["residual"] = True
    run = tmp_path / "run"
    train_main(["train", write_config(tmp_path, config), "--run-dir", str(run), "--device", "cpu"])
    bundle = export_run(run, tmp_path / "bundle", keep_all_pairs=True, device="cpu")
    assert bundle.metadata["input_standardisation"] == "histogram_matching"
    reference = load_bundle(tmp_path / "bundle").load_weights("standardisation.safetensors")
    assert set(reference) >= {"MR_T1", "MR_T2"} and reference["MR_T2"].shape == (201,)
    source = sitk.ReadImage(str(data_root / "case2" / "t1.nii.gz"))
    result = translate_image(source, "MR_T1", "MR_T2", model=bundle.path, device="cpu")
    assert result.image.GetSize() == source.GetSize() and result.image.GetSpacing() == source.GetSpacing()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"standardise": "identity"}, "must name a histogram_matching bundle"),
        ({"standardise": "histogram-matching", "all_targets": True}, "cannot be combined with data.all_targets"),
    ],
)
def test_a_bad_standardisation_is_a_config_error(tmp_path, data_root, capsys, data, message):
    config = tiny_config(data_root, data=data)
    with pytest.raises(SystemExit):
        train_main(["train", write_config(tmp_path, config), "--run-dir", str(tmp_path / "run"), "--device", "cpu"])
    assert message in capsys.readouterr().err


def test_export_refuses_an_existing_folder_and_a_run_without_held_out_cases(tmp_path, data_root):
    config = exportable(tiny_config(data_root))
    config["train"]["steps"] = 1
    run = tmp_path / "run"
    train_main(["train", write_config(tmp_path, config), "--run-dir", str(run), "--device", "cpu"])
    (tmp_path / "taken").mkdir()
    with pytest.raises(BundleError, match="already exists"):
        export_run(run, tmp_path / "taken")
    with pytest.raises(BundleError, match="no validation case"):
        config["data"]["val_cases"] = []
        (run / "config.json").write_text(json.dumps(config))
        export_run(run, tmp_path / "bundle")


def test_evaluate_writes_a_table_of_the_model_against_identity_and_histogram_matching(tmp_path, data_root, capsys):
    bundle = tiny_unet_bundle(tmp_path / "tiny")
    for index in range(2):
        arrays = head_arrays(index)
        write_volume(tmp_path / "ct" / f"p{index}" / "ct.nii.gz", arrays["t1"] * 2 - 1000)
        write_volume(tmp_path / "ct" / f"p{index}" / "cbct.nii.gz", arrays["t1"] * 2 - 950)
    table = tmp_path / "eval" / "table.md"
    train_main(["evaluate", str(bundle.path), "--data", str(tmp_path / "ct"), "--out", str(table), "--device", "cpu"])
    text = table.read_text()
    assert "| CBCT->CT | tiny-unet | 2 |" in text and "| CBCT->CT | histogram-matching | 2 |" in text
    assert "| CBCT->CT | identity | 2 |" in text and " HU " in text
    rows = json.loads(table.with_suffix(".json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"tiny-unet", "identity", "histogram-matching"} and len(rows) == 6
    assert capsys.readouterr().out == text

    compared = tmp_path / "eval" / "compared.md"
    args = ["evaluate", str(bundle.path), "--data", str(tmp_path / "ct"), "--out", str(compared), "--device", "cpu"]
    train_main([*args, "--compare", str(bundle.path), "--metrics", "MAE,ME,SLICE_DIFF"])
    header = compared.read_text().splitlines()[2]
    assert header == "| pair | method | cases | MAE | ME | SLICE_DIFF |"
    with pytest.raises(SystemExit, match="unknown SSIM3"):
        train_main([*args, "--metrics", "MAE,SSIM3"])

    data = {"source": "folder", "root": str(tmp_path / "ct"), "modalities": ["CBCT", "CT"], "test_cases": ["p1"]}
    config = {"stage": "unet", "data": data}
    (tmp_path / "run.json").write_text(json.dumps(config))
    held_out = tmp_path / "eval" / "held_out.md"
    args = ["evaluate", str(bundle.path), "--data", str(tmp_path / "run.json"), "--out", str(held_out)]
    train_main([*args, "--split", "test", "--device", "cpu"])
    assert {r["case"] for r in json.loads(held_out.with_suffix(".json").read_text())["rows"]} == {"p1"}


@pytest.mark.slow
def test_the_medtrans_cli_translates_with_an_exported_bundle_folder(tmp_path, data_root):
    config = exportable(tiny_config(data_root))
    run, out = tmp_path / "run", tmp_path / "synthetic_t2.nii.gz"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "medtrans_training",
            "train",
            write_config(tmp_path, config),
            "--run-dir",
            str(run),
            "--device",
            "cpu",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "medtrans_training",
            "export",
            str(run),
            "--out",
            str(tmp_path / "b"),
            "--keep-all-pairs",
        ],
        check=True,
        capture_output=True,
    )
    assert load_bundle(tmp_path / "b").family == "unet"
    source_path = data_root / "case2" / "t1.nii.gz"
    done = subprocess.run(
        [sys.executable, "-m", "MedTransCore", "translate", str(source_path), "--source-modality", "MR_T1",
         "--target-modality", "MR_T2", "--output", str(out), "--model", str(tmp_path / "b"), "--progress-format", "lines"],
        capture_output=True,
        encoding="utf-8", errors="replace",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1].removeprefix("RESULT "))["family"] == "unet"
    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(source_path))
    assert written.GetSize() == source.GetSize() and written.GetSpacing() == source.GetSpacing()
