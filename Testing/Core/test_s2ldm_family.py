"""The s2ldm family: syncretic autoencoder, Eq. 1-4 as reconstructed, and the translator (untrained tiny networks)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from MedTransCore.bundles import Bundle, load_bundle, save_bundle
from MedTransCore.errors import BundleError, CancelledError, InputError
from MedTransCore.models.aldm import translator as aldm_translator
from MedTransCore.models.aldm.networks import build_autoencoder, build_diffusion_unet
from MedTransCore.models.aldm.sampler import build_scheduler, sample
from MedTransCore.models.registry import get_translator_class
from MedTransCore.models.s2ldm import (
    S2LDMTranslator,
    adaptive_similarity_loss,
    build_diffusion,
    build_networks,
    build_syncretic_autoencoder,
    feature_similarity,
    guidance,
    high_frequency_enhance,
    mask_schedule,
    rescaled_similarity,
    similarity_mask,
)
from MedTransCore.models.s2ldm.networks import gaussian_blur

TINY_VQ = {"kind": "vq", "channels": [8, 8], "num_res_channels": [8, 8], "num_embeddings": 16, "embedding_dim": 2}
TINY_UNET = {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 4, "num_head_channels": 8}
NETWORK = {"modalities": ["CT", "CT_ARTERIAL", "CT_VENOUS"], "autoencoder": TINY_VQ, "diffusion": TINY_UNET}


def tiny_s2ldm_bundle(directory: Path, seed: int = 0, sampler: dict | None = None, output: str | None = None) -> Bundle:
    """A randomly initialised ``s2ldm`` bundle for CT -> arterial / venous at 12 mm (whole volumes, 2 steps)."""
    torch.manual_seed(seed)
    autoencoder, diffusion = build_networks(NETWORK)
    for p in diffusion.denoiser.unet.out.parameters():  # MONAI zero-initialises it: make the prediction non-trivial
        torch.nn.init.normal_(p, std=0.05)
    metadata = {
        "name": directory.name,
        "family": "s2ldm",
        "version": "0.0.1",
        "description": "tiny random s2ldm for tests",
        "modalities": NETWORK["modalities"],
        "pairs": [["CT", "CT_ARTERIAL"], ["CT", "CT_VENOUS"]],
        "spacing": [12.0, 12.0, 12.0],
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": sampler if sampler is not None else {"scheduler": "ddim", "default_steps": 2, "scale_factor": 1.5},
        "network": NETWORK,
        "training": {},
        "metrics": {},
        "licence": "Apache-2.0",
        **({"output": output} if output else {}),
    }
    weights = {"autoencoder.safetensors": autoencoder.state_dict(), "diffusion.safetensors": diffusion.state_dict()}
    return save_bundle(directory, metadata, weights)


# ---- the syncretic autoencoder ------------------------------------------------------------------------------------
def test_the_syncretic_encoder_embeds_both_images_with_one_set_of_weights_and_decodes_the_cect_only():
    torch.manual_seed(0)
    autoencoder = build_syncretic_autoencoder(**TINY_VQ).eval()
    plain = build_autoencoder(**TINY_VQ).eval()
    assert list(autoencoder.state_dict()) == list(plain.state_dict())  # no extra parameter: loads into aldm's
    plain.load_state_dict(autoencoder.state_dict())
    ncct, cect = torch.rand(2, 1, 16, 12, 8) * 2 - 1, torch.rand(2, 1, 16, 12, 8) * 2 - 1
    with torch.no_grad():
        out = autoencoder(ncct, cect)
        assert out.reconstruction.shape == cect.shape and out.regularisation.ndim == 0
        assert out.source_features.shape == out.target_features.shape == (2, 2, 4, 3, 2)
        # one encoder: each branch gives what the encoder gives that image alone
        torch.testing.assert_close(out.source_features, plain.net.encode(ncct))
        torch.testing.assert_close(out.target_features, plain.net.encode(cect))
        # the decoder reconstructs the CECT from its own quantised embedding (the NCCT is never decoded)
        torch.testing.assert_close(out.reconstruction, plain.decode(plain.encode(cect)))
        recon, reg = autoencoder(cect)  # a single image: aldm's plain pass
        torch.testing.assert_close(recon, out.reconstruction)
    with pytest.raises(ValueError, match="one shape"):
        autoencoder(ncct, cect[:, :, :8])


def test_a_kl_syncretic_autoencoder_gives_its_means_as_features():
    torch.manual_seed(0)
    kl = {"kind": "kl", "channels": [8, 8], "latent_channels": 2, "norm_num_groups": 4, "attention_levels": [0, 0]}
    autoencoder = build_syncretic_autoencoder(**kl).eval()
    ncct, cect = torch.rand(1, 1, 8, 8, 8), torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        out = autoencoder(ncct, cect)
        torch.testing.assert_close(out.source_features, autoencoder.net.encode(ncct)[0])
    assert out.reconstruction.shape == cect.shape and float(out.regularisation) >= 0


# ---- Eq. 1: adaptive similarity loss ------------------------------------------------------------------------------
def test_feature_similarity_is_the_cosine_across_channels_voxel_by_voxel():
    a = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]).view(1, 2, 1, 1, 3)
    b = torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.0, 1.0]]).view(1, 2, 1, 1, 3)
    s = feature_similarity(a, b)
    assert s.shape == (1, 1, 1, 1, 3)
    torch.testing.assert_close(s.flatten(), torch.tensor([1.0, -1 / math.sqrt(2), 0.0]))
    with pytest.raises(ValueError, match="different shapes"):
        feature_similarity(a, b[..., :2])


def test_the_adaptive_similarity_loss_is_zero_for_the_same_embedding_and_focuses_on_dissimilar_features():
    torch.manual_seed(0)
    a = torch.randn(2, 4, 3, 3, 3)
    assert float(adaptive_similarity_loss(a, 3 * a)) == pytest.approx(0.0, abs=1e-6)  # cosine ignores the norm
    b = a + 0.5 * torch.randn_like(a)
    plain = 1 - feature_similarity(a, b).flatten(1)
    torch.testing.assert_close(adaptive_similarity_loss(a, b, gamma=0.0), plain.mean())  # gamma 0: mean of 1 - cos
    assert float(adaptive_similarity_loss(a, b, gamma=2.0)) > float(plain.mean())
    assert 0.0 <= float(adaptive_similarity_loss(a, -a)) <= 2.0 + 1e-6

    # Two features: one nearly aligned, one far apart. With gamma the far one gets a larger share of the gradient.
    def gradient_share(gamma: float) -> float:
        x = torch.tensor([[1.0, 0.1], [0.0, 1.0]]).view(1, 2, 1, 1, 2).requires_grad_(True)
        y = torch.tensor([[1.0, -1.0], [0.1, 0.2]]).view(1, 2, 1, 1, 2)
        adaptive_similarity_loss(x, y, gamma=gamma).backward()
        per_voxel = x.grad.flatten(2).norm(dim=1).flatten()
        return float(per_voxel[1] / per_voxel.sum())

    assert gradient_share(2.0) > gradient_share(0.0) > 0.5
    with pytest.raises(ValueError, match="gamma"):
        adaptive_similarity_loss(a, b, gamma=-1.0)


# ---- high-frequency enhancement -----------------------------------------------------------------------------------
def test_high_frequency_enhancement_keeps_flat_and_linear_regions_and_amplifies_fine_detail():
    flat = torch.full((1, 1, 10, 10, 10), 0.3)
    torch.testing.assert_close(high_frequency_enhance(flat), flat)
    z = torch.arange(16.0).view(1, 1, 16, 1, 1).expand(1, 1, 16, 16, 16) / 16
    inner = (slice(None), slice(None), slice(4, 12), slice(4, 12), slice(4, 12))
    torch.testing.assert_close(high_frequency_enhance(z)[inner], z[inner])  # a ramp has no high frequency
    index = torch.arange(16)
    checker = ((index.view(-1, 1, 1) + index.view(1, -1, 1) + index.view(1, 1, -1)) % 2).float().view(1, 1, 16, 16, 16)
    detail = checker - 0.5
    enhanced = high_frequency_enhance(detail, alpha=0.5, sigma=1.0)
    gain = float(enhanced[inner].abs().mean() / detail[inner].abs().mean())
    assert gain == pytest.approx(1.5, abs=0.02)  # the finest detail: 1 + alpha
    edge = torch.where(z > 0.5, 1.0, -1.0)
    sharpened = high_frequency_enhance(edge, alpha=0.5)
    assert float(sharpened.max()) > 1.0 and float(sharpened.min()) < -1.0  # overshoot at the edge, no clipping
    assert high_frequency_enhance(edge, alpha=0.0) is edge
    with pytest.raises(ValueError):
        high_frequency_enhance(edge, alpha=-0.1)
    with pytest.raises(ValueError):
        gaussian_blur(edge, sigma=0.0)


# ---- Eq. 3: dynamic similarity mask -------------------------------------------------------------------------------
def test_the_mask_schedule_rises_from_zero_to_one_with_exponent_two():
    assert [mask_schedule(p) for p in (0.0, 0.25, 0.5, 1.0)] == [0.0, 0.0625, 0.25, 1.0]
    assert mask_schedule(0.5, exponent=1.0) == 0.5
    for bad in (-0.1, 1.1):
        with pytest.raises(ValueError, match="progress"):
            mask_schedule(bad)
    with pytest.raises(ValueError, match="exponent"):
        mask_schedule(0.5, exponent=0.0)


def test_the_similarity_mask_starts_as_the_similarity_relaxes_to_ones_and_is_all_ones_at_inference():
    s = torch.tensor([-1.0, 0.0, 0.6, 1.0]).view(1, 1, 1, 1, 4)
    start = similarity_mask(s, 0.0, scaling="cosine")
    torch.testing.assert_close(start.flatten(), torch.tensor([0.0, 0.5, 0.8, 1.0]))  # (1 + s) / 2
    halfway = similarity_mask(s, 0.5, scaling="cosine")
    torch.testing.assert_close(halfway.flatten(), torch.tensor([0.25, 0.625, 0.85, 1.0]))  # S' + (1 - S') / 4
    for scaling in ("minmax", "cosine"):
        torch.testing.assert_close(similarity_mask(s, 1.0, scaling=scaling), torch.ones_like(s))
        torch.testing.assert_close(similarity_mask(s, None, scaling=scaling), torch.ones_like(s))
        masks = [similarity_mask(s, p, scaling=scaling) for p in torch.linspace(0, 1, 11).tolist()]
        assert all(bool((later >= earlier).all()) for earlier, later in zip(masks, masks[1:]))
        assert all(float(m.min()) >= 0 and float(m.max()) <= 1 for m in masks)
    with pytest.raises(ValueError, match="scaling"):
        similarity_mask(s, 0.5, scaling="softmax")


def test_min_max_scaling_spreads_each_pairs_own_similarities_over_zero_to_one():
    s = torch.tensor([[0.95, 0.99, 1.0, 0.97], [0.5, 0.5, 0.5, 0.5]]).view(2, 1, 1, 1, 4)
    rescaled = rescaled_similarity(s)
    torch.testing.assert_close(rescaled[0].flatten(), torch.tensor([0.0, 0.8, 1.0, 0.4]))
    torch.testing.assert_close(rescaled[1], torch.ones_like(rescaled[1]))  # nothing differs: nothing is masked
    torch.testing.assert_close(similarity_mask(s, 0.0), rescaled)


# ---- Eq. 4: the similarity-guided UNet ----------------------------------------------------------------------------
def test_the_aldm_unet_keeps_its_three_latents_by_default_and_takes_other_condition_widths():
    aldm = build_diffusion_unet(latent_channels=2, num_modalities=2, **TINY_UNET)
    assert aldm.unet.conv_in.conv.in_channels == 6 and aldm.condition_channels == 4 and aldm.latent_channels == 2
    one = build_diffusion_unet(latent_channels=2, num_modalities=2, condition_channels=2, **TINY_UNET)
    assert one.unet.conv_in.conv.in_channels == 4 and one.condition_channels == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="condition_channels"):
            build_diffusion_unet(latent_channels=2, num_modalities=2, condition_channels=bad, **TINY_UNET)


def test_the_unet_sees_the_noisy_latent_and_the_masked_ncct_latent_and_depends_on_the_phase():
    torch.manual_seed(0)
    unet = build_diffusion(latent_channels=2, num_modalities=3, conditioning="film", **TINY_UNET).eval()
    assert unet.denoiser.unet.conv_in.conv.in_channels == 4 and unet.divisor == 2
    for p in unet.parameters():  # MONAI zero-initialises the residual branches and the output
        torch.nn.init.normal_(p, std=0.2)
    noisy, z = torch.randn(1, 2, 5, 6, 7), torch.randn(1, 2, 5, 6, 7)
    t, arterial, venous = torch.tensor([500]), torch.tensor([1]), torch.tensor([2])
    mask = torch.rand(1, 1, 5, 6, 7)
    with torch.no_grad():
        out = unet(noisy, t, guidance(z), arterial)
        assert out.shape == noisy.shape
        torch.testing.assert_close(unet(noisy, t, guidance(z, torch.ones(1, 1, 5, 6, 7)), arterial), out)
        torch.testing.assert_close(
            unet(noisy, t, guidance(z, mask), arterial), unet(noisy, t, guidance(z * mask), arterial)
        )
        other = unet(noisy, t, guidance(z), venous)
    assert float((out - other).norm() / out.norm()) > 1e-3
    with pytest.raises(ValueError, match="NCCT latent and its mask"):
        unet(noisy, t, z, arterial)
    with pytest.raises(ValueError, match="one latent as condition"):
        type(unet)(build_diffusion_unet(latent_channels=2, num_modalities=3, **TINY_UNET))


def test_a_residual_unet_starts_at_the_ncct_latent_and_its_noise_is_consistent_with_its_clean_latent():
    net = build_diffusion(latent_channels=2, num_modalities=3, prediction="residual", **TINY_UNET)
    scheduler = build_scheduler("ddim")
    z_nc, noisy = torch.randn(2, 2, 8, 8, 8), torch.randn(2, 2, 8, 8, 8)
    mask = torch.rand(2, 1, 8, 8, 8)
    condition, t, phase = guidance(z_nc, mask), torch.tensor([10, 700]), torch.tensor([1, 2])
    with pytest.raises(RuntimeError, match="set_schedule"):
        net(noisy, t, condition, phase)
    net.set_schedule(scheduler.alphas_cumprod)
    # MONAI zero-initialises the last layer: an untrained network predicts the masked NCCT latent.
    torch.testing.assert_close(net(noisy, t, condition, phase, output="x0"), z_nc * mask)
    for p in net.denoiser.unet.out.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x0, eps = net(noisy, t, condition, phase, output="x0"), net(noisy, t, condition, phase)
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1, 1)
    torch.testing.assert_close(noisy, a.sqrt() * x0 + (1 - a).sqrt() * eps)
    # Every sampler then returns the NCCT latent from an untrained residual network, whatever the noise.
    fresh = build_diffusion(latent_channels=2, num_modalities=3, prediction="residual", **TINY_UNET)
    fresh.set_schedule(scheduler.alphas_cumprod)
    for sampler in ("ddim", "dpmpp"):
        out = sample(fresh, guidance(z_nc), phase, scheduler, 5, sampler=sampler, seed=3)
        torch.testing.assert_close(out, z_nc, atol=1e-5, rtol=0)
    epsilon = build_diffusion(latent_channels=2, num_modalities=3, **TINY_UNET)
    with pytest.raises(ValueError, match="noise only"):
        epsilon(noisy, t, condition, phase, output="x0")
    with pytest.raises(ValueError, match="prediction must be one of"):
        build_diffusion(latent_channels=2, num_modalities=3, prediction="v", **TINY_UNET)


def test_build_networks_names_a_missing_part():
    with pytest.raises(ValueError, match="diffusion"):
        build_networks({"modalities": ["CT"], "autoencoder": TINY_VQ})


# ---- the translator -----------------------------------------------------------------------------------------------
def test_the_registry_loads_an_s2ldm_bundle_and_any_window_keeps_its_shape(tmp_path):
    bundle = tiny_s2ldm_bundle(tmp_path / "tiny-s2ldm")
    translator = get_translator_class("s2ldm")(bundle, "cpu")
    assert isinstance(translator, S2LDMTranslator) and translator.stochastic and translator.default_steps == 2
    out = translator.translate(torch.randn(1, 1, 13, 10, 7, dtype=torch.float64), "CT", "CT_ARTERIAL")
    assert out.shape == (1, 1, 13, 10, 7) and out.dtype == torch.float64 and torch.isfinite(out).all()


def test_inference_conditions_on_the_ncct_latent_with_an_all_ones_mask_and_the_target_phase(tmp_path):
    translator = S2LDMTranslator(tiny_s2ldm_bundle(tmp_path / "tiny-s2ldm"))
    seen = []
    translator.diffusion.register_forward_pre_hook(lambda module, args: seen.append((args[2], args[3])))
    x = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    translator.translate(x, "CT", "CT_VENOUS", steps=3)
    assert len(seen) == 3
    z_source = translator.autoencoder.encode(x) * translator.scale_factor
    for condition, target in seen:
        latent, mask = condition.chunk(2, dim=1)
        torch.testing.assert_close(latent, z_source)
        assert bool((mask == 1).all()) and target.tolist() == [2]


def test_a_residual_bundle_adds_the_decoded_enhancement_to_the_source(tmp_path, monkeypatch):
    direct = S2LDMTranslator(tiny_s2ldm_bundle(tmp_path / "direct"))
    residual = S2LDMTranslator(tiny_s2ldm_bundle(tmp_path / "residual", output="residual"))
    assert (direct.output_mode, residual.output_mode) == ("direct", "residual")
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    a, b = direct.translate(x, "CT", "CT_ARTERIAL", seed=2), residual.translate(x, "CT", "CT_ARTERIAL", seed=2)
    with torch.inference_mode():
        reconstruction = direct.autoencoder.decode(direct.autoencoder.encode(x))
    torch.testing.assert_close(b, x + a - reconstruction)
    # A sample that is the source's own latent (no enhancement predicted) gives the source back exactly.
    monkeypatch.setattr(aldm_translator, "sample", lambda net, condition, *args, **kwargs: condition.chunk(2, 1)[0])
    torch.testing.assert_close(residual.translate(x, "CT", "CT_ARTERIAL"), x, atol=1e-5, rtol=0)
    broken = load_bundle(tmp_path / "residual")
    broken.metadata["output"] = "sharpened"
    with pytest.raises(BundleError, match="output must be one of"):
        S2LDMTranslator(broken)


def test_the_same_seed_gives_the_same_translation_and_another_seed_another(tmp_path):
    translator = S2LDMTranslator(tiny_s2ldm_bundle(tmp_path / "tiny-s2ldm"))
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a, b = (translator.translate(x, "CT", "CT_ARTERIAL", seed=3, steps=3) for _ in range(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, translator.translate(x, "CT", "CT_ARTERIAL", seed=4, steps=3))
    translator.use_sampler("dpmpp")
    assert torch.isfinite(translator.translate(x, "CT", "CT_ARTERIAL", steps=2)).all()
    with pytest.raises(InputError, match="unknown sampler"):
        translator.use_sampler("euler")


def test_progress_rises_to_one_and_cancel_stops_between_steps(tmp_path):
    translator = S2LDMTranslator(tiny_s2ldm_bundle(tmp_path / "tiny-s2ldm"))
    x = torch.zeros(1, 1, 8, 8, 8)
    fractions: list[float] = []
    translator.translate(x, "CT", "CT_ARTERIAL", steps=4, progress=fractions.append)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 6
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 2

    with pytest.raises(CancelledError):
        translator.translate(x, "CT", "CT_ARTERIAL", steps=10, cancel=cancel)
    assert len(polls) == 3


def test_a_pair_the_bundle_does_not_list_and_a_broken_bundle_are_clear_errors(tmp_path):
    translator = S2LDMTranslator(tiny_s2ldm_bundle(tmp_path / "tiny-s2ldm"))
    with pytest.raises(InputError, match="does not support"):
        translator.translate(torch.zeros(1, 1, 8, 8, 8), "CT_ARTERIAL", "CT")
    no_scale = tiny_s2ldm_bundle(tmp_path / "no-scale", sampler={"scheduler": "ddim", "default_steps": 2})
    with pytest.raises(BundleError, match="scale_factor"):
        S2LDMTranslator(no_scale)
    bundle = load_bundle(tmp_path / "tiny-s2ldm")
    bundle.metadata["network"] = {**NETWORK, "diffusion": {**TINY_UNET, "channels": [16, 16]}}
    with pytest.raises(BundleError, match="does not match"):
        S2LDMTranslator(bundle)
