"""The ``aldm`` networks: autoencoders, MS-SPADE and the conditioned diffusion UNet, randomly initialised and tiny."""

from __future__ import annotations

import pytest
import torch

from MedTransCore.models.aldm import build_autoencoder, build_diffusion_unet, build_networks, build_spade
from MedTransCore.models.aldm.networks import resolve_autoencoder_config, resolve_spade_config

TINY_VQ = {"channels": [8, 8], "num_res_channels": [8, 8], "num_embeddings": 16, "embedding_dim": 2}
TINY_KL = {"channels": [8, 8, 8], "latent_channels": 2, "norm_num_groups": 4}
TINY_SPADE = {"channels": 8, "hidden_channels": 8, "num_res_blocks": 1, "num_spade_blocks": 1}
# MONAI's middle block always has self-attention: num_head_channels must divide the last channel count.
TINY_UNET = {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 8, "num_head_channels": 8}


@pytest.mark.parametrize(("kind", "cfg"), [("vq", TINY_VQ), ("kl", TINY_KL)])
def test_both_autoencoders_down_sample_four_times_and_decode_back_to_the_image_shape(kind, cfg):
    autoencoder = build_autoencoder(kind, **cfg).eval()
    assert autoencoder.downsample_factor == 4 and autoencoder.latent_channels == 2
    x = torch.randn(2, 1, 16, 12, 8)
    with torch.no_grad():
        z = autoencoder.encode(x)
        assert z.shape == (2, 2, 4, 3, 2)
        assert autoencoder.decode(z).shape == x.shape
    autoencoder.train()
    recon, reg = autoencoder(x)
    assert recon.shape == x.shape and reg.ndim == 0 and float(reg.detach()) >= 0


@pytest.mark.parametrize(
    ("kind", "bad"),
    [
        ("gan", {}),
        ("vq", {"spatial_dims": 2}),
        ("vq", {"not_a_keyword": 1}),
        ("kl", {"channels": [8, 12], "norm_num_groups": 8}),
    ],
)
def test_a_bad_autoencoder_config_is_a_value_error(kind, bad):
    with pytest.raises(ValueError):
        build_autoencoder(kind, **bad)


def test_resolved_configs_hold_every_keyword_so_a_bundle_never_depends_on_todays_defaults():
    full = resolve_autoencoder_config("vq", **TINY_VQ)
    assert full["kind"] == "vq" and full["channels"] == [8, 8] and "downsample_parameters" in full
    spade = resolve_spade_config(channels=8)
    assert spade["channels"] == 8 and spade["norm"] == "INSTANCE" and "latent_channels" not in spade


def test_ms_spade_starts_as_the_identity_and_switches_parameters_by_target():
    torch.manual_seed(0)
    spade = build_spade(latent_channels=2, modalities=["CT", "MR_T1"], **TINY_SPADE).eval()
    z = torch.randn(2, 2, 6, 6, 6)
    torch.testing.assert_close(spade(z, "CT"), z)  # zero-initialised output convolution
    for p in spade.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    to_ct, to_t1 = spade(z, "CT"), spade(z, "MR_T1")
    assert not torch.allclose(to_ct, to_t1)
    mixed = spade(z, ["CT", "MR_T1"])
    torch.testing.assert_close(mixed[0], to_ct[0])
    torch.testing.assert_close(mixed[1], to_t1[1])


def test_ms_spade_rejects_an_unknown_target_and_a_bad_config():
    spade = build_spade(latent_channels=2, modalities=["CT"], **TINY_SPADE)
    with pytest.raises(ValueError, match="MR_T2"):
        spade(torch.randn(1, 2, 4, 4, 4), "MR_T2")
    with pytest.raises(ValueError):
        build_spade(latent_channels=2, modalities=["CT", "CT"])
    with pytest.raises(ValueError):
        build_spade(latent_channels=2, modalities=["CT"], num_spade_blocks=0)
    with pytest.raises(ValueError):
        build_spade(latent_channels=2, modalities=["CT"], colour="blue")


@pytest.mark.parametrize("conditioning", ["film", "class", "crossattn", "both"])
def test_the_diffusion_unet_predicts_noise_of_the_latent_shape_and_depends_on_the_target(conditioning):
    torch.manual_seed(0)
    # Two channels per GroupNorm group: with one, a per-channel class bias before the norm is erased exactly.
    cfg = {**TINY_UNET, "norm_num_groups": 4, "conditioning": conditioning}
    if conditioning in ("crossattn", "both"):
        cfg["attention_levels"] = [False, True]
    unet = build_diffusion_unet(latent_channels=2, num_modalities=3, **cfg).eval()
    for p in unet.parameters():  # MONAI zero-initialises each residual branch and the output convolution
        torch.nn.init.normal_(p, std=0.2)
    noisy, cond = torch.randn(1, 2, 5, 6, 7), torch.randn(1, 4, 5, 6, 7)
    t = torch.tensor([500])
    with torch.no_grad():
        a, b = (unet(noisy, t, cond, torch.tensor([i])) for i in (0, 2))
    assert a.shape == noisy.shape
    assert float((a - b).norm() / a.norm()) > 1e-3  # a real dependence, far above float rounding


@pytest.mark.parametrize(
    "bad",
    [
        {"conditioning": "text"},
        {"conditioning": "crossattn"},  # no attention level
        {"channels": [8, 12]},  # not a multiple of norm_num_groups
        {"with_conditioning": True},  # set by the builder
    ],
)
def test_a_bad_diffusion_config_is_a_value_error(bad):
    with pytest.raises(ValueError):
        build_diffusion_unet(latent_channels=2, num_modalities=2, **{**TINY_UNET, **bad})


def test_build_networks_reads_one_network_section_and_names_what_is_missing():
    network = {"modalities": ["CT", "MR_T1"], "autoencoder": {"kind": "vq", **TINY_VQ}, "spade": TINY_SPADE}
    with pytest.raises(ValueError, match="diffusion"):
        build_networks(network)
    autoencoder, spade, unet = build_networks({**network, "diffusion": TINY_UNET})
    assert spade.modalities == ["CT", "MR_T1"] and unet.num_modalities == 2
    assert unet.unet.conv_in.conv.in_channels == 3 * autoencoder.latent_channels
