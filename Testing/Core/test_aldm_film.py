"""FiLM conditioning of the diffusion UNet: a target signal GroupNorm cannot erase; old bundles load unchanged."""

from __future__ import annotations

import copy

import pytest
import torch

from MedTransCore.bundles import find_bundle
from MedTransCore.models.aldm import ALDMTranslator, build_diffusion_unet
from MedTransCore.models.aldm.diagnostics import conditioning_signal, relative_change
from MedTransCore.models.aldm.film import ScaleShiftGroupNorm, add_scale_shift_norms
from MedTransCore.models.aldm.networks import resolve_diffusion_config

# One channel per GroupNorm group: the worst case for a target label added before the norm.
ONE_CHANNEL_GROUPS = {"channels": [8, 8], "attention_levels": [False, False], "norm_num_groups": 8}
ONE_CHANNEL_GROUPS["num_head_channels"] = 8


def _randomised(conditioning: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    unet = build_diffusion_unet(latent_channels=2, num_modalities=3, conditioning=conditioning, **ONE_CHANNEL_GROUPS)
    for p in unet.parameters():  # MONAI's and FiLM's zero-initialised layers would hide every signal
        torch.nn.init.normal_(p, std=0.2)
    return unet.eval()


def _inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 2, 6, 6, 6, generator=g), torch.tensor([400]), torch.randn(1, 4, 6, 6, 6, generator=g)


def test_with_one_channel_per_group_the_class_label_is_normalised_away_but_film_keeps_it():
    noisy, t, cond = _inputs()
    signal = {}
    for mode in ("class", "film"):
        signal[mode] = conditioning_signal(
            _randomised(mode), noisy, t, cond, torch.tensor([0]), other_condition=-cond, other_index=torch.tensor([2])
        )
    assert signal["class"]["class"] < 1e-5  # float rounding only: the label has no effect
    assert signal["film"]["class"] > 1e-2
    assert signal["film"]["spade"] > 1e-2 and signal["class"]["spade"] > 1e-2  # the condition tensor always counts


def test_new_configs_default_to_film_and_a_new_film_network_starts_as_the_class_network():
    assert resolve_diffusion_config()["conditioning"] == "film"
    torch.manual_seed(0)
    plain = build_diffusion_unet(latent_channels=2, num_modalities=3, conditioning="class", **ONE_CHANNEL_GROUPS)
    film = build_diffusion_unet(latent_channels=2, num_modalities=3, conditioning="film", **ONE_CHANNEL_GROUPS)
    norms = [m for m in film.modules() if isinstance(m, ScaleShiftGroupNorm)]
    assert len(norms) == sum(1 for n, _ in plain.named_modules() if n.endswith("norm2"))
    state = {k.replace(".norm2.", ".norm2.norm."): v for k, v in plain.state_dict().items()}  # wrapped norms
    missing, unexpected = film.load_state_dict(state, strict=False)
    assert not unexpected and missing and all(".norm2.proj." in k for k in missing)  # only the new projections
    for p in plain.unet.out.parameters():
        torch.nn.init.normal_(p, std=0.2)
    film.unet.out.load_state_dict(plain.unet.out.state_dict())
    noisy, t, cond = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(film(noisy, t, cond, torch.tensor([1])), plain(noisy, t, cond, torch.tensor([1])))


def test_the_film_projections_learn_and_survive_the_ema_copy():
    unet = build_diffusion_unet(latent_channels=2, num_modalities=3, conditioning="film", **ONE_CHANNEL_GROUPS)
    for block_conv in (m for n, m in unet.named_modules() if n.endswith("conv2.conv")):
        torch.nn.init.normal_(block_conv.weight, std=0.1)  # open the residual branches (zero in MONAI)
    torch.nn.init.normal_(unet.unet.out[-1].conv.weight, std=0.1)
    noisy, t, cond = _inputs()
    unet(noisy, t, cond, torch.tensor([0])).square().mean().backward()
    proj = [m.proj.weight.grad for m in unet.modules() if isinstance(m, ScaleShiftGroupNorm)]
    assert all(g is not None for g in proj) and any(float(g.abs().sum()) > 0 for g in proj)
    ema = copy.deepcopy(unet).eval()  # the trainer's EMA copy: the embedding hand-over must come along
    with torch.no_grad():
        torch.testing.assert_close(
            ema(noisy, t, cond, torch.tensor([0])), unet.eval()(noisy, t, cond, torch.tensor([0]))
        )


def test_a_scale_shift_norm_outside_its_block_and_a_network_without_blocks_are_refused():
    norm = ScaleShiftGroupNorm(torch.nn.GroupNorm(2, 4), emb_channels=8)
    with pytest.raises(RuntimeError, match="resnet block"):
        norm(torch.randn(1, 4, 3, 3, 3))
    with pytest.raises(ValueError, match="DiffusionUNetResnetBlock"):
        add_scale_shift_norms(torch.nn.Conv3d(1, 1, 1))


def test_the_shipped_bundle_keeps_its_class_conditioning_and_loads_every_weight_unchanged():
    translator = ALDMTranslator(find_bundle("phantom-head-aldm"))
    assert translator.bundle.metadata["network"]["diffusion"]["conditioning"] == "class"
    assert translator.diffusion.conditioning == "class"
    assert not any(isinstance(m, ScaleShiftGroupNorm) for m in translator.diffusion.modules())
    stored = translator.bundle.load_weights("diffusion.safetensors")
    assert set(stored) == set(translator.diffusion.state_dict())
    # Its target label still moves the prediction (2-4 channels per group): measured, not erased.
    g = torch.Generator().manual_seed(0)
    noisy, cond = torch.randn(1, 4, 8, 8, 8, generator=g), torch.randn(1, 8, 8, 8, 8, generator=g)
    with torch.no_grad():
        a, b = (translator.diffusion(noisy, torch.tensor([100]), cond, torch.tensor([i])) for i in (3, 4))
    assert relative_change(a, b) > 1e-3
