"""The ``aldm`` translator: loading a bundle of three weight files, seeded sampling, the whole pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedTransCore.bundles import Bundle, save_bundle
from MedTransCore.errors import BundleError, CancelledError, InputError
from MedTransCore.models.aldm import ALDMTranslator, build_networks, ddim_sample
from MedTransCore.models.registry import get_translator_class
from MedTransCore.phantoms import generate_phantom
from MedTransCore.translate import translate_image

TINY_NETWORK = {
    "modalities": ["CT", "MR_T1"],
    "autoencoder": {
        "kind": "vq",
        "channels": [8, 8],
        "num_res_channels": [8, 8],
        "num_embeddings": 16,
        "embedding_dim": 2,
    },
    "spade": {"channels": 8, "hidden_channels": 8, "num_res_blocks": 0, "num_spade_blocks": 1},
    "diffusion": {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8},
}


def tiny_aldm_bundle(directory: Path, network: dict | None = None, seed: int = 0, default_steps: int = 2) -> Bundle:
    """A randomly initialised ``aldm`` bundle over CT and MR_T1 at 12 mm (whole volumes, 2 DDIM steps)."""
    network = network or TINY_NETWORK
    torch.manual_seed(seed)
    autoencoder, spade, diffusion = build_networks(network)
    for p in diffusion.unet.out.parameters():  # MONAI zero-initialises it: make the noise prediction non-trivial
        torch.nn.init.normal_(p, std=0.05)
    modalities = network["modalities"]
    metadata = {
        "name": directory.name,
        "family": "aldm",
        "version": "0.0.1",
        "description": "tiny random aldm for tests",
        "modalities": modalities,
        "pairs": [[s, t] for s in modalities for t in modalities if s != t],
        "spacing": [12.0, 12.0, 12.0],
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": {"scheduler": "ddim", "default_steps": default_steps, "scale_factor": 1.5},
        "network": network,
        "training": {},
        "metrics": {},
        "licence": "Apache-2.0",
    }
    weights = {
        "autoencoder.safetensors": autoencoder.state_dict(),
        "spade.safetensors": spade.state_dict(),
        "diffusion.safetensors": diffusion.state_dict(),
    }
    return save_bundle(directory, metadata, weights)


def test_the_registry_loads_an_aldm_bundle_and_any_window_keeps_its_shape(tmp_path):
    bundle = tiny_aldm_bundle(tmp_path / "tiny-aldm")
    translator = get_translator_class("aldm")(bundle, "cpu")
    assert isinstance(translator, ALDMTranslator) and translator.stochastic and translator.default_steps == 2
    out = translator.translate(torch.randn(1, 1, 13, 10, 7, dtype=torch.float64), "MR_T1", "CT")
    assert out.shape == (1, 1, 13, 10, 7) and out.dtype == torch.float64 and torch.isfinite(out).all()


def test_the_same_seed_gives_the_same_translation_and_another_seed_another(tmp_path):
    translator = ALDMTranslator(tiny_aldm_bundle(tmp_path / "tiny-aldm"))
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    a, b = (translator.translate(x, "CT", "MR_T1", seed=3, steps=3) for _ in range(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, translator.translate(x, "CT", "MR_T1", seed=4, steps=3))


def test_progress_goes_to_one_and_cancel_raises(tmp_path):
    translator = ALDMTranslator(tiny_aldm_bundle(tmp_path / "tiny-aldm"))
    x = torch.zeros(1, 1, 8, 8, 8)
    fractions = []
    translator.translate(x, "CT", "MR_T1", steps=4, progress=fractions.append)
    assert fractions[-1] == 1.0 and fractions == sorted(fractions) and len(fractions) >= 6
    with pytest.raises(CancelledError):
        translator.translate(x, "CT", "MR_T1", cancel=lambda: True)


def test_an_unsupported_pair_is_an_input_error(tmp_path):
    translator = ALDMTranslator(tiny_aldm_bundle(tmp_path / "tiny-aldm"))
    with pytest.raises(InputError, match="MR_T2"):
        translator.translate(torch.zeros(1, 1, 8, 8, 8), "MR_T1", "MR_T2")


def test_weights_that_do_not_fit_the_network_config_or_a_missing_scale_factor_are_bundle_errors(tmp_path):
    bundle = tiny_aldm_bundle(tmp_path / "tiny-aldm")
    meta_path = bundle.path / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["network"]["diffusion"]["channels"] = [16, 16]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="diffusion.safetensors"):
        ALDMTranslator(Bundle(bundle.path, meta))
    meta = {**bundle.metadata, "sampler": {"default_steps": 2}}
    with pytest.raises(BundleError, match="scale_factor"):
        ALDMTranslator(Bundle(bundle.path, meta))
    meta = {**bundle.metadata, "network": {**bundle.metadata["network"], "spade": {"colour": "blue"}}}
    with pytest.raises(BundleError, match="colour"):
        ALDMTranslator(Bundle(bundle.path, meta))


def test_the_pipeline_returns_a_mean_and_an_uncertainty_map_on_the_source_geometry(tmp_path, isolated_user_models):
    tiny_aldm_bundle(isolated_user_models / "tiny-aldm")
    case = generate_phantom("head", seed=3, shape=(16, 16, 16), spacing=(12.0, 12.0, 12.0), modalities=["MR_T1", "CT"])
    source = case.images["MR_T1"]
    result = translate_image(source, "MR_T1", "CT", model="tiny-aldm", device="cpu", uncertainty_samples=2, seed=5)
    assert result.settings["family"] == "aldm" and result.settings["steps"] == 2
    for image in (result.image, result.uncertainty):
        assert image.GetSize() == source.GetSize() and image.GetSpacing() == source.GetSpacing()
    std = sitk.GetArrayFromImage(result.uncertainty)
    assert np.all(std >= 0) and std.max() > 0
    again = translate_image(source, "MR_T1", "CT", model="tiny-aldm", device="cpu", uncertainty_samples=2, seed=5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again.image), sitk.GetArrayFromImage(result.image))


def test_a_translation_is_decode_of_ddim_on_the_scaled_source_and_spade_latents(tmp_path):
    translator = ALDMTranslator(tiny_aldm_bundle(tmp_path / "tiny-aldm"))
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        z = translator.autoencoder.encode(x)
        cond = torch.cat([z, translator.spade(z, "MR_T1")], dim=1) * 1.5  # spade on unscaled latents, as trained
        sample = ddim_sample(translator.diffusion, cond, torch.tensor([1]), translator.scheduler, 3, seed=2)
        expected = translator.autoencoder.decode(sample / 1.5)
    torch.testing.assert_close(translator.translate(x, "CT", "MR_T1", steps=3, seed=2), expected)
