"""The three stages of the vae_transformer family: KL autoencoder -> latent transformer -> decoder fine-tune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medtrans_training.cli import main as train_main
from medtrans_training.export import export_run
from medtrans_training.stages.vae_transformer import draw_requests
from MedTransCore.bundles import load_bundle
from MedTransCore.errors import InputError
from MedTransCore.phantoms import generate_phantom
from MedTransCore.translate import translate_image

CONFIGS = Path(__file__).parents[2] / "training" / "configs"


def train(config: str, run: Path, *overrides: str) -> None:
    sets = [arg for o in overrides for arg in ("--set", o)]
    train_main(["train", str(CONFIGS / config), "--run-dir", str(run), "--device", "cpu", *sets])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vae")
    paths = {name: root / name for name in ("ae", "transformer", "decoder")}
    train("vae_tiny_autoencoder.yaml", paths["ae"])
    train("vae_tiny_transformer.yaml", paths["transformer"], f"model.autoencoder_run={paths['ae']}")
    train("vae_tiny_decoder.yaml", paths["decoder"], f"model.transformer_run={paths['transformer']}")
    return paths


def test_each_stage_trains_in_seconds_and_logs_its_losses_and_validation(runs):
    transformer, decoder = metrics(runs["transformer"]), metrics(runs["decoder"])
    assert {"loss_latent", "loss_image"} <= set(transformer[0])
    assert {"val_latent_l1", "val_mae_body"} <= set(next(r for r in transformer if r["split"] == "val"))
    assert {"loss_l1", "loss_ssim"} <= set(decoder[0])
    scale = torch.load(runs["transformer"] / "checkpoint.pt", weights_only=True)["modules"]["latent_scale"]["value"]
    assert float(scale) > 0


def test_the_decoder_stage_changes_only_the_decoding_path(runs):
    before = torch.load(runs["ae"] / "checkpoint.pt", weights_only=True)["modules"]["autoencoder"]
    after = torch.load(runs["decoder"] / "checkpoint.pt", weights_only=True)["modules"]["decoder"]
    after = {k.removeprefix("autoencoder."): v for k, v in after.items()}
    changed = {k.split(".")[1] for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= {"decoder", "post_quant_conv"}


def test_the_transformer_stage_resumes_from_its_checkpoint(runs, tmp_path):
    import shutil

    run = tmp_path / "transformer"
    shutil.copytree(runs["transformer"], run)
    train_main(["train", "--resume", str(run), "--set", "train.steps=3", "--device", "cpu"])
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3


@pytest.mark.parametrize("stage", ["transformer", "decoder"])
def test_both_stages_export_a_bundle_that_translates_one_and_several_sources_on_the_source_geometry(
    runs, tmp_path, stage
):
    bundle = load_bundle(
        export_run(runs[stage], tmp_path / "bundle", keep_all_pairs=True, max_cases=1, device="cpu").path
    )
    assert bundle.family == "vae_transformer" and bundle.metadata["grid"] is None  # whole volumes
    assert set(bundle.metadata["weights"]) == {"autoencoder.safetensors", "transformer.safetensors"}
    network = bundle.metadata["network"]
    assert network["autoencoder"]["kind"] == "kl" and network["transformer"]["grid"] == [4, 4, 4]
    assert network["scale_factor"] > 0 and "aldm_autoencoder" in bundle.metadata["stages"]

    # An oblique, non-cubic phantom at another spacing: the result lies on the source's own grid.
    case = generate_phantom("head", seed=7, shape=(14, 18, 16), spacing=(10.0, 11.0, 12.0), modalities=["CT", "MR_T1"])
    ct = case.images["CT"]
    ct.SetDirection((0.98, -0.2, 0.0, 0.2, 0.98, 0.0, 0.0, 0.0, 1.0))
    t1 = case.images["MR_T1"]
    t1.CopyInformation(ct)
    one = translate_image(ct, "CT", "MR_T2", model=str(bundle.path), device="cpu")
    assert one.image.GetSize() == ct.GetSize() and one.image.GetDirection() == pytest.approx(ct.GetDirection())
    assert np.isfinite(sitk.GetArrayFromImage(one.image)).all()

    metadata = json.loads((bundle.path / "metadata.json").read_text())
    metadata["source_sets"] = [{"sources": ["CT", "MR_T1"], "target": "MR_T2"}]
    (bundle.path / "metadata.json").write_text(json.dumps(metadata))
    both = translate_image(ct, "CT", "MR_T2", model=str(bundle.path), device="cpu", extra_sources={"MR_T1": t1})
    assert both.image.GetSize() == ct.GetSize()
    assert not np.array_equal(sitk.GetArrayFromImage(both.image), sitk.GetArrayFromImage(one.image))


def test_requests_draw_a_present_target_and_a_non_empty_subset_of_the_other_present_sources():
    available = torch.tensor([[1, 1, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool).repeat(50, 1)
    generator = torch.Generator().manual_seed(0)
    target, present = draw_requests(available, 0.5, generator)
    rows = torch.arange(len(target))
    assert available[rows, target].all() and not present[rows, target].any()
    assert (present & ~available).sum() == 0 and (present.sum(dim=1) >= 1).all()
    assert (present.sum(dim=1) > 1).any() and (present.sum(dim=1) == 1).any()
    _, single = draw_requests(available, 1.0, generator)
    assert (single.sum(dim=1) == 1).all()
    with pytest.raises(InputError, match="at least two modalities"):
        draw_requests(torch.tensor([[1, 0, 0]], dtype=torch.bool), 0.5)


def test_the_transformer_stage_refuses_data_without_every_modality_or_a_window_the_patch_cannot_hold(
    runs, tmp_path, capsys
):
    for override, message in (("data.all_targets=false", "all_targets"), ("data.patch=[6,6,6]", "at least the window")):
        with pytest.raises(SystemExit):
            train("vae_tiny_transformer.yaml", tmp_path / "run", f"model.autoencoder_run={runs['ae']}", override)
        assert message in capsys.readouterr().err
