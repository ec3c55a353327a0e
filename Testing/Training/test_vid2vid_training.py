"""The ``vid2vid`` stage end to end on tiny head phantoms: clips from the slice sampler, autoregressive training with
and without the two discriminators, resume, export, and the exported bundle translating through MedTransCore."""

from __future__ import annotations

import json

import pytest
import torch

from medtrans_training.cli import main as train_main
from medtrans_training.config import resolve_config
from medtrans_training.data import build_datasets
from medtrans_training.export import export_run
from medtrans_training.stages.vid2vid import Vid2VidStage
from MedTransCore.bundles import load_bundle
from MedTransCore.errors import InputError
from MedTransCore.phantoms import generate_phantom
from MedTransCore.translate import translate_image

GAN = {"gan": 0.05, "temporal_gan": 0.05}


def vid2vid_config(**loss) -> dict:
    """A vid2vid config that trains in about a second: 16^2 crops of 5-slice clips, a 4-wide BasicUNet."""
    return resolve_config(
        {
            "stage": "vid2vid",
            "seed": 0,
            "data": {
                "source": "phantom",
                "modalities": ["CBCT", "CT"],
                "pairs": [["CBCT", "CT"]],
                "spacing": [6.0, 6.0, 6.0],
                "sampling": "slices",
                "context": 2,
                "patch": [32, 32],
                "phantom": {
                    "anatomy": "head",
                    "shape": [32, 32, 24],
                    "train_seeds": [0, 2],
                    "val_seeds": [1000, 1001],
                    "test_seeds": [2000, 2001],
                },
                "repeats": 4,
            },
            "model": {
                "network": {"context": 1, "previous": 2, "features": [4, 4, 4, 8, 8, 4]},
                "loss": loss,
                "discriminator": {"channels": 4, "num_layers_d": 2},
            },
            "train": {"steps": 2, "batch_size": 2, "log_every": 1, "val_every": 2, "val_batches": 1, "save_every": 1},
            "export": {"name": "tiny-vid2vid", "limitations": "test model", "version": "0.0.1"},
        }
    )


def write_config(tmp_path, config) -> str:
    path = tmp_path / "vid2vid.json"
    path.write_text(json.dumps(config))
    return str(path)


def train_logs(run) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if row["split"] == "train"]


def test_a_slice_item_holds_a_clip_of_both_modalities_with_a_mask_per_slice():
    train, _ = build_datasets(vid2vid_config()["data"])
    item = train[0]
    assert item["images"].shape == (2, 5, 32, 32) and item["masks"].shape == (5, 32, 32)
    torch.testing.assert_close(item["mask"], item["masks"][2:3])
    assert item["mask"].sum() > 0


def test_the_stage_config_is_checked_before_any_data_is_loaded():
    config = vid2vid_config()  # resolve_config checks every key against the stage's model_schema
    with pytest.raises(InputError, match="model.network.context"):
        Vid2VidStage({**config, "data": {**config["data"], "context": 1}}, "cpu")
    with pytest.raises(InputError, match="one pair"):
        Vid2VidStage({**config, "data": {**config["data"], "pairs": "all"}}, "cpu")
    with pytest.raises(ValueError, match="upsample"):
        Vid2VidStage({**config, "model": {"network": {"upsample": "nearest"}}}, "cpu")
    with pytest.raises(InputError, match="temporal_weight"):
        vid2vid_config(temporal_weight=1.0)


def test_with_gan_weights_both_discriminators_learn_and_the_generator_gets_their_gradients():
    config = vid2vid_config(**GAN)
    stage = Vid2VidStage(config, "cpu")
    modules = stage.build_modules()
    assert set(modules) == {"generator", "discriminator", "temporal_discriminator"}
    stage.attach(modules, {}, {})
    stage.configure_optimizers()
    train, _ = build_datasets(config["data"])
    batch = torch.utils.data.default_collate([train[0], train[1]])
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in modules.items()}
    logs = stage.training_step(batch, 0)
    assert {"loss_l1", "loss_temporal", "loss_adv_discriminator", "loss_d_temporal_discriminator"} <= set(logs)
    for name, module in modules.items():
        changed = any(not torch.equal(a, b) for a, b in zip(before[name], module.parameters()))
        assert changed, f"{name} was not updated"
    assert Vid2VidStage(vid2vid_config(), "cpu").build_modules().keys() == {"generator"}


@pytest.mark.parametrize("loss", [{}, GAN], ids=["l1-only", "with-gans"])
def test_a_tiny_run_trains_resumes_and_exports_a_bundle_that_translates_on_the_source_geometry(tmp_path, loss):
    run = tmp_path / "run"
    train_main(["train", write_config(tmp_path, vid2vid_config(**loss)), "--run-dir", str(run), "--device", "cpu"])
    assert [row["step"] for row in train_logs(run)] == [1, 2]
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 2 and len(checkpoint["modules"]) == (3 if loss else 1)

    train_main(["train", "--resume", str(run), "--set", "train.steps=3", "--device", "cpu"])
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3
    assert [row["step"] for row in train_logs(run)][-1] == 3

    bundle = load_bundle(export_run(run, tmp_path / "bundle", keep_all_pairs=True, device="cpu").path)
    meta = bundle.metadata
    assert meta["family"] == "vid2vid" and meta["grid"] is None and meta["pairs"] == [["CBCT", "CT"]]
    assert meta["network"]["context"] == 1 and meta["network"]["upsample"] == "nontrainable"
    assert meta["training"]["steps"] == 3

    source = generate_phantom(anatomy="head", seed=7, shape=(20, 18, 10), spacing=(5.0, 5.0, 5.0)).images["CBCT"]
    result = translate_image(source, "CBCT", "CT", model=bundle.path, device="cpu")
    assert result.image.GetSize() == source.GetSize() and result.image.GetOrigin() == source.GetOrigin()
    assert result.settings["family"] == "vid2vid"
