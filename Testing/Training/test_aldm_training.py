"""The three ALDM stages: autoencoder -> MS-SPADE -> latent diffusion, exported as one ``aldm`` bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from medtrans_training.cli import main as train_main
from medtrans_training.config import load_config
from medtrans_training.export import export_run
from medtrans_training.stages.aldm_autoencoder import AutoencoderStage, LatentCache
from medtrans_training.stages.aldm_diffusion import DiffusionStage
from medtrans_training.stages.aldm_spade import SPADEStage
from MedTransCore.bundles import load_bundle
from MedTransCore.phantoms import generate_phantom
from MedTransCore.translate import translate_image

CONFIGS = Path(__file__).parents[2] / "training" / "configs"


def train(config: str, run: Path, *overrides: str) -> None:
    sets = [arg for o in overrides for arg in ("--set", o)]
    train_main(["train", str(CONFIGS / config), "--run-dir", str(run), "--device", "cpu", *sets])


@pytest.mark.slow
def test_the_three_stages_train_in_turn_and_export_one_bundle_that_translates(tmp_path):
    ae, spade, diffusion = tmp_path / "ae", tmp_path / "spade", tmp_path / "diffusion"
    train("aldm_tiny_autoencoder.yaml", ae)
    train("aldm_tiny_spade.yaml", spade, f"model.autoencoder_run={ae}")
    paths = (f"model.autoencoder_run={ae}", f"model.spade_run={spade}")
    train(
        "aldm_tiny_diffusion.yaml", diffusion, *paths, "model.network.conditioning=film", "model.default_sampler=dpmpp"
    )
    logs = [json.loads(line) for line in (diffusion / "metrics.jsonl").read_text().splitlines()]
    assert {"val_mse", "val_mae_body"} <= set(next(r for r in logs if r["split"] == "val"))
    scale = float(torch.load(diffusion / "checkpoint.pt", weights_only=True)["modules"]["latent_scale"]["value"])
    assert scale > 0

    train_main(["train", "--resume", str(diffusion), "--set", "train.steps=3", "--device", "cpu"])
    resumed = torch.load(diffusion / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 3 and float(resumed["modules"]["latent_scale"]["value"]) == scale

    bundle = export_run(diffusion, tmp_path / "tiny-aldm", keep_all_pairs=True, device="cpu")
    bundle = load_bundle(bundle.path)
    assert bundle.family == "aldm" and bundle.metadata["grid"] is None
    assert set(bundle.metadata["weights"]) == {"autoencoder.safetensors", "spade.safetensors", "diffusion.safetensors"}
    sampler = bundle.metadata["sampler"]
    assert sampler["scale_factor"] == pytest.approx(scale) and sampler["clip_sample"] is False
    assert sampler["default_steps"] == 2 and sampler["beta_start"] == 0.0015 and sampler["scheduler"] == "dpmpp"
    network = bundle.metadata["network"]
    assert network["modalities"] == ["CT", "MR_T1"] and network["autoencoder"]["kind"] == "vq"
    assert network["diffusion"]["conditioning"] == "film"
    stages = bundle.metadata["stages"]
    assert stages["aldm_autoencoder"]["steps"] == 2 and stages["aldm_spade"]["config"]["stage"] == "aldm_spade"

    case = generate_phantom("head", seed=7, shape=(16, 16, 16), spacing=(12.0, 12.0, 12.0), modalities=["CT"])
    result = translate_image(case.images["CT"], "CT", "MR_T1", model=str(bundle.path), device="cpu")
    assert result.image.GetSize() == (16, 16, 16) and result.settings["steps"] == 2
    assert result.settings["sampler"] == "dpmpp"
    assert sitk.GetArrayFromImage(result.image).std() > 0


def test_the_latent_cache_encodes_an_unchanged_image_once_and_a_changed_one_again():
    calls = []

    def encode(images):
        calls.append(images.shape[0])
        return images[:, :, ::2, ::2, ::2] * 2

    cache = LatentCache(encode)
    a, b = torch.randn(2, 1, 4, 4, 4)
    first = cache(torch.stack([a, b]), ["case0", "case1"], ["CT", "CT"])
    again = cache(torch.stack([b, a]), ["case1", "case0"], ["CT", "CT"])
    torch.testing.assert_close(again, first.flip(0))
    assert calls == [2]
    changed = cache(torch.stack([a + 1]), ["case0"], ["CT"])
    torch.testing.assert_close(changed, encode(torch.stack([a + 1])))
    assert calls == [2, 1, 1]
    shifted = LatentCache(lambda x, shifts: x + torch.tensor(shifts).view(-1, 1, 1, 1, 1))
    out = shifted(torch.stack([a, b]), ["case0", "case0"], ["CT->MR", "CT->PD"], extras=[1.0, 2.0])
    torch.testing.assert_close(out, torch.stack([a + 1, b + 2]))
    uncached = LatentCache(encode, enabled=False)
    uncached(torch.stack([a]), ["case0"], ["CT"])
    uncached(torch.stack([a]), ["case0"], ["CT"])
    assert calls[-2:] == [1, 1]


def test_an_unknown_default_sampler_is_refused_before_any_run_is_loaded(tmp_path):
    overrides = [f"model.autoencoder_run={tmp_path / 'ae'}", f"model.spade_run={tmp_path / 'spade'}"]
    config = load_config(CONFIGS / "aldm_tiny_diffusion.yaml", [*overrides, "model.default_sampler=euler"])
    with pytest.raises(ValueError, match="default_sampler must be one of"):
        DiffusionStage(config)


def test_a_later_stage_without_its_earlier_run_is_a_clear_error(tmp_path):
    config = load_config(CONFIGS / "aldm_tiny_spade.yaml", [f"model.autoencoder_run={tmp_path / 'missing'}"])
    with pytest.raises(FileNotFoundError, match="train that stage first"):
        SPADEStage(config)
    config["model"].pop("autoencoder_run")
    with pytest.raises(ValueError, match="autoencoder_run"):
        SPADEStage(config)


@pytest.mark.parametrize("kind", ["vq", "kl"])
def test_an_autoencoder_stage_with_a_patch_gan_updates_both_networks(kind):
    network = {"kind": kind, "channels": [8, 8, 8][: 2 if kind == "vq" else 3]}
    network |= {"num_res_channels": [8, 8]} if kind == "vq" else {"latent_channels": 2, "norm_num_groups": 4}
    config = load_config(CONFIGS / "aldm_tiny_autoencoder.yaml")
    config["model"] = {
        "network": network,
        "loss": {"adversarial": 0.1},
        "discriminator": {"channels": 4, "num_layers_d": 2},
    }
    stage = AutoencoderStage(config)
    modules = stage.build_modules()
    stage.attach(modules, {}, {})
    stage.configure_optimizers()
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in modules.items()}
    x = torch.rand(1, 1, 24, 24, 24) * 2 - 1
    logs = stage.training_step({"source": x, "target": -x, "mask": torch.ones_like(x)}, step=0)
    assert {"loss_rec", "loss_reg", "loss_adv", "loss_d"} <= set(logs)
    for name, module in modules.items():
        assert any(not torch.equal(a, p) for a, p in zip(before[name], module.parameters(), strict=True)), name
    with torch.no_grad():
        metrics = stage.validation_step({"source": x, "target": -x, "mask": torch.ones_like(x)})
    assert {"val_mae_body", "val_psnr"} <= set(metrics)
