"""The two S2LDM stages: syncretic autoencoder -> similarity-guided latent diffusion, exported as an ``s2ldm`` bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from medtrans_training.cli import main as train_main
from medtrans_training.config import load_config
from medtrans_training.contrast_eval import IDENTITY
from medtrans_training.contrast_eval import main as contrast_main
from medtrans_training.export import export_run
from medtrans_training.stages.s2ldm_autoencoder import SyncreticAutoencoderStage
from medtrans_training.stages.s2ldm_diffusion import SimilarityDiffusionStage
from MedTransCore.bundles import load_bundle
from MedTransCore.models.s2ldm import feature_similarity
from MedTransCore.phantoms import generate_phantom
from MedTransCore.translate import translate_image

CONFIGS = Path(__file__).parents[2] / "training" / "configs"
WINDOW = {"CT": [-200.0, 600.0], "CT_ARTERIAL": [-200.0, 600.0], "CT_VENOUS": [-200.0, 600.0]}


def train(config: str, run: Path, *overrides: str) -> None:
    sets = [arg for o in overrides for arg in ("--set", o)]
    train_main(["train", str(CONFIGS / config), "--run-dir", str(run), "--device", "cpu", *sets])


@pytest.fixture(scope="module")
def autoencoder_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("s2ldm") / "autoencoder"
    train("s2ldm_tiny_autoencoder.yaml", run)
    return run


def diffusion_config(autoencoder_run: Path, *overrides: str) -> dict:
    return load_config(CONFIGS / "s2ldm_tiny_diffusion.yaml", [f"model.autoencoder_run={autoencoder_run}", *overrides])


def pair_batch(seed: int = 0) -> dict:
    """The two pairs of one case as the data loader gives them: its NCCT -> arterial and -> venous CECT."""
    generator = torch.Generator().manual_seed(seed)
    ncct = (torch.rand(1, 1, 16, 24, 32, generator=generator) * 0.4 - 0.2).repeat(2, 1, 1, 1, 1)
    cect = ncct.clone()
    cect[0, :, 6:10, 10:14, 12:20] += 0.8  # an enhanced "artery"
    cect[1, :, 4:12, 4:12, 4:16] += 0.3  # an enhanced "organ"
    return {
        "source": ncct,
        "target": cect,
        "mask": torch.ones_like(ncct),
        "source_modality": torch.tensor([0, 0]),
        "target_modality": torch.tensor([1, 2]),
        "source_key": ["CT", "CT"],
        "target_key": ["CT_ARTERIAL", "CT_VENOUS"],
        "case": [f"case{seed}", f"case{seed}"],
    }


@pytest.mark.slow
def test_both_stages_train_resume_and_export_a_bundle_that_turns_an_abdomen_ct_arterial(autoencoder_run, tmp_path):
    logs = [json.loads(line) for line in (autoencoder_run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_rec", "loss_reg", "loss_sim"} <= set(next(r for r in logs if r["split"] == "train"))
    assert {"val_mae_body", "val_mae_ncct_only", "val_similarity"} <= set(next(r for r in logs if r["split"] == "val"))

    diffusion = tmp_path / "diffusion"
    train("s2ldm_tiny_diffusion.yaml", diffusion, f"model.autoencoder_run={autoencoder_run}")
    logs = [json.loads(line) for line in (diffusion / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_mse", "mask_mean"} <= set(next(r for r in logs if r["split"] == "train"))
    assert {"val_mse", "val_mae_body"} <= set(next(r for r in logs if r["split"] == "val"))
    scale = float(torch.load(diffusion / "checkpoint.pt", weights_only=True)["modules"]["latent_scale"]["value"])
    assert scale > 0

    train_main(["train", "--resume", str(diffusion), "--set", "train.steps=3", "--device", "cpu"])
    resumed = torch.load(diffusion / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 3 and float(resumed["modules"]["latent_scale"]["value"]) == scale

    bundle = load_bundle(export_run(diffusion, tmp_path / "tiny-s2ldm", keep_all_pairs=True, device="cpu").path)
    assert bundle.family == "s2ldm" and bundle.metadata["grid"] is None and bundle.metadata["output"] == "direct"
    assert set(bundle.metadata["weights"]) == {"autoencoder.safetensors", "diffusion.safetensors"}
    assert bundle.pairs == [("CT", "CT_ARTERIAL"), ("CT", "CT_VENOUS")]
    assert bundle.metadata["normalisation"]["intensity_window"] == WINDOW
    sampler = bundle.metadata["sampler"]
    assert sampler["scale_factor"] == pytest.approx(scale) and sampler["default_steps"] == 2
    network = bundle.metadata["network"]
    assert network["modalities"] == ["CT", "CT_ARTERIAL", "CT_VENOUS"] and network["autoencoder"]["kind"] == "vq"
    assert network["diffusion"]["conditioning"] == "film"
    assert bundle.metadata["similarity_mask"] | {"formula": None} == {
        "enabled": True,
        "exponent": 2.0,
        "scaling": "minmax",
        "formula": None,
    }
    assert bundle.metadata["stages"]["s2ldm_autoencoder"]["steps"] == 2

    case = generate_phantom("abdomen", seed=7, shape=(32, 24, 16), spacing=(12.0, 12.0, 12.0), modalities=["CT"])
    ct = case.images["CT"]
    ct.SetOrigin((-190.0, -140.0, -90.0))
    result = translate_image(ct, "CT", "CT_ARTERIAL", model=str(bundle.path), device="cpu")
    image = result.image
    assert image.GetSize() == ct.GetSize() and image.GetSpacing() == ct.GetSpacing()
    assert image.GetOrigin() == ct.GetOrigin() and image.GetDirection() == ct.GetDirection()
    assert result.settings["steps"] == 2 and sitk.GetArrayFromImage(image).std() > 0

    # The comparison command scores the exported bundle on held-out phantoms and draws its figure.
    out = tmp_path / "contrast.md"
    contrast_main(
        [str(bundle.path), "--seeds", "7-7", "--shape", "32,24,16", "--spacing", "12", "--out", str(out)]
        + ["--figure", str(tmp_path / "contrast.png"), "--device", "cpu"]
    )
    table = out.read_text()
    assert "| tiny-s2ldm |" in table and f"| {IDENTITY} |" in table and (tmp_path / "contrast.png").stat().st_size
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"tiny-s2ldm", IDENTITY} and len(rows) == 4


def test_the_autoencoder_step_trains_one_shared_encoder_on_both_images_and_a_patch_gan():
    config = load_config(CONFIGS / "s2ldm_tiny_autoencoder.yaml")
    config["model"] |= {"loss": {"adversarial": 0.1}, "discriminator": {"channels": 4, "num_layers_d": 2}}
    stage = SyncreticAutoencoderStage(config)
    modules = stage.build_modules()
    stage.attach(modules, {}, {})
    stage.configure_optimizers()
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in modules.items()}
    batch = pair_batch()
    logs = stage.training_step(batch, step=0)
    assert {"loss_rec", "loss_reg", "loss_sim", "loss_adv", "loss_d"} <= set(logs)
    for name, module in modules.items():
        assert any(not torch.equal(a, p) for a, p in zip(before[name], module.parameters(), strict=True)), name
    with torch.no_grad():
        metrics = stage.validation_step(batch)
    assert {"val_mae_body", "val_mae_enhanced", "val_mae_ncct_only", "val_similarity", "val_codes_used"} <= set(metrics)
    assert -1.0 <= metrics["val_similarity"] <= 1.0


def test_the_similarity_loss_alone_moves_the_encoder_and_leaves_the_decoder(monkeypatch):
    config = load_config(CONFIGS / "s2ldm_tiny_autoencoder.yaml", ["model.codebook_reset.every=0"])
    stage = SyncreticAutoencoderStage(config)
    modules = stage.build_modules()
    stage.attach(modules, {}, {})
    stage.configure_optimizers()
    # Only L_sim: every other term weighted 0 (the reconstruction through a stub that gives no gradient).
    stage.loss_config |= {"regularisation": 0.0, "similarity": 1.0}
    monkeypatch.setattr(stage, "_reconstruction_loss", lambda recon, images, mask: 0.0 * recon.sum())
    net = modules["autoencoder"].net
    encoder, decoder = [p.detach().clone() for p in net.encoder.parameters()], net.decoder.state_dict()
    decoder = {k: v.clone() for k, v in decoder.items()}
    stage.training_step(pair_batch(), step=0)
    assert any(not torch.equal(a, p) for a, p in zip(encoder, net.encoder.parameters(), strict=True))
    assert all(torch.equal(decoder[k], v) for k, v in net.decoder.state_dict().items())


def test_the_training_mask_follows_the_schedule_and_validation_and_the_ablation_use_all_ones(autoencoder_run):
    stage = SimilarityDiffusionStage(diffusion_config(autoencoder_run))
    modules = stage.build_modules()
    stage.attach(modules, {}, {})
    batch = pair_batch(1)
    source, target = (stage.autoencoder.encode(batch[k]) for k in ("source", "target"))
    similarity = feature_similarity(source, target)
    assert float(similarity.min()) < 0.999  # the bright region changes the CECT latents
    low = similarity.flatten(1).min(1).values.view(-1, 1, 1, 1, 1)
    high = similarity.flatten(1).max(1).values.view(-1, 1, 1, 1, 1)
    expected = (similarity - low) / (high - low)  # min-max per pair
    stage.progress = 0.0
    x0, condition = stage.condition(batch)
    assert condition.shape[1] == 2 * x0.shape[1] and stage.scale > 0
    torch.testing.assert_close(condition[:, 2:], expected.expand_as(source))
    torch.testing.assert_close(condition[:, :2], source * stage.scale)
    stage.progress = 0.5
    torch.testing.assert_close(stage.condition(batch)[1][:, 2:], (expected + (1 - expected) * 0.25).expand_as(source))
    stage.progress = None  # validation: as at inference
    assert bool((stage.condition(batch)[1][:, 2:] == 1).all())

    stage.configure_optimizers()
    logs = stage.training_step(batch, step=0)
    assert logs["mask_mean"] == pytest.approx(float(expected.mean()), abs=1e-6) and stage.progress is None

    ablation = SimilarityDiffusionStage(diffusion_config(autoencoder_run, "model.similarity_mask.enabled=false"))
    ablation.attach(ablation.build_modules(), {}, {})
    ablation.progress = 0.0
    assert bool((ablation.condition(batch)[1][:, 2:] == 1).all())


def test_a_residual_diffusion_stage_learns_the_clean_latent_and_records_its_prediction_for_the_bundle(autoencoder_run):
    stage = SimilarityDiffusionStage(diffusion_config(autoencoder_run, "model.prediction=residual"))
    modules = stage.build_modules()
    stage.attach(modules, {}, {})
    stage.configure_optimizers()
    before = [p.detach().clone() for p in modules["diffusion"].parameters()]
    logs = stage.training_step(pair_batch(2), step=0)
    assert set(logs) == {"loss_x0", "mask_mean"} and logs["loss_x0"] > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, modules["diffusion"].parameters(), strict=True))
    assert stage.network_config["prediction"] == "residual" and stage.bundle_fields()["network"]["diffusion"] == {
        **stage.network_config
    }
    with torch.no_grad():  # as the trainer validates
        assert set(stage.validation_step(pair_batch(3))) >= {"val_mse", "val_latent_l1", "val_mae_body"}
    with pytest.raises(ValueError, match="model.prediction must be one of"):
        SimilarityDiffusionStage(diffusion_config(autoencoder_run, "model.prediction=v"))


def test_a_diffusion_run_needs_a_syncretic_autoencoder_run_with_the_same_intensity_window(autoencoder_run, tmp_path):
    with pytest.raises(ValueError, match="intensity_window"):
        SimilarityDiffusionStage(diffusion_config(autoencoder_run, "data.intensity_window.CT=[-300, 600]"))
    aldm_run = tmp_path / "aldm"
    aldm_run.mkdir()
    (aldm_run / "config.json").write_text(json.dumps({"stage": "aldm_autoencoder"}))
    with pytest.raises(ValueError, match="not an 's2ldm_autoencoder' run"):
        SimilarityDiffusionStage(diffusion_config(aldm_run))
    with pytest.raises(FileNotFoundError, match="train that stage first"):
        SimilarityDiffusionStage(diffusion_config(tmp_path / "missing"))
    config = diffusion_config(autoencoder_run)
    config["model"].pop("autoencoder_run")
    with pytest.raises(ValueError, match="autoencoder_run"):
        SimilarityDiffusionStage(config)
    for bad in ("exponent=0", "scaling=softmax", "enabled=maybe"):
        with pytest.raises(ValueError, match="similarity_mask"):
            SimilarityDiffusionStage(diffusion_config(autoencoder_run, f"model.similarity_mask.{bad}"))
    with pytest.raises(ValueError, match="model.output must be one of"):
        SimilarityDiffusionStage(diffusion_config(autoencoder_run, "model.output=sharpened"))


@pytest.mark.parametrize(
    "config, override, words",
    [
        ("s2ldm_tiny_autoencoder.yaml", "model.loss.similarity_gama=1", "did you mean model.loss.similarity_gamma?"),
        ("s2ldm_tiny_autoencoder.yaml", "model.high_frequency.alfa=1", "did you mean model.high_frequency.alpha?"),
        (
            "s2ldm_tiny_diffusion.yaml",
            "model.similarity_mask.enable=false",
            "did you mean model.similarity_mask.enabled?",
        ),
        ("s2ldm_tiny_diffusion.yaml", "model.network.num_res_block=1", "model.network"),
    ],
)
def test_the_s2ldm_stages_check_their_model_keys(config, override, words):
    with pytest.raises(ValueError, match=words):
        load_config(CONFIGS / config, [override])
