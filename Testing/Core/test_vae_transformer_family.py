"""The vae_transformer family's latent transformer and translator (untrained tiny networks, CPU)."""

from __future__ import annotations

import pytest
import torch

from MedTransCore.bundles import save_bundle
from MedTransCore.errors import BundleError, InputError
from MedTransCore.models.aldm.networks import build_autoencoder
from MedTransCore.models.registry import get_translator_class
from MedTransCore.models.vae_transformer import LatentTransformer, build_transformer, resolve_transformer_config
from MedTransCore.models.vae_transformer import translator as vae_translator

MODALITIES = ["CT", "MR_T1", "MR_T2"]
AUTOENCODER = {"kind": "kl", "channels": [8, 8], "latent_channels": 2, "norm_num_groups": 4,
               "attention_levels": [False, False]}  # fmt: skip
TRANSFORMER = {"grid": [4, 4, 4], "patch": 2, "dim": 16, "depth": 2, "heads": 2}


def tiny_transformer(**overrides) -> LatentTransformer:
    torch.manual_seed(0)
    return build_transformer(latent_channels=2, modalities=MODALITIES, **{**TRANSFORMER, **overrides}).eval()


def test_tokens_and_untokens_are_exact_inverses_on_the_window():
    net = tiny_transformer()
    latent = torch.randn(3, 2, 4, 4, 4)
    tokens = net.tokens(latent)
    assert tokens.shape == (3, 8, 2 * 8)
    torch.testing.assert_close(net.untokens(tokens), latent)


def test_an_absent_source_slot_is_ignored_whatever_it_holds():
    net = tiny_transformer()
    first = torch.randn(1, 1, 2, 4, 4, 4)
    index = torch.tensor([[0, 1]])
    target = torch.tensor([2])
    alone = net(first, index[:, :1], torch.tensor([[True]]), target)
    for garbage in (torch.zeros(1, 1, 2, 4, 4, 4), 100 * torch.randn(1, 1, 2, 4, 4, 4)):
        padded = net(torch.cat([first, garbage], 1), index, torch.tensor([[True, False]]), target)
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


def test_sources_are_a_set_their_order_does_not_matter_but_their_content_and_modality_do():
    net = tiny_transformer()
    sources, present, target = torch.randn(1, 2, 2, 4, 4, 4), torch.ones(1, 2, dtype=torch.bool), torch.tensor([2])
    out = net(sources, torch.tensor([[0, 1]]), present, target)
    swapped = net(sources.flip(1), torch.tensor([[1, 0]]), present, target)
    torch.testing.assert_close(swapped, out, atol=1e-5, rtol=1e-5)
    relabelled = net(sources, torch.tensor([[1, 0]]), present, target)
    assert not torch.allclose(relabelled, out, atol=1e-4)
    other_target = net(sources, torch.tensor([[0, 1]]), present, torch.tensor([0]))
    assert not torch.allclose(other_target, out, atol=1e-4)


def test_a_batch_mixes_items_with_different_source_sets():
    net = tiny_transformer()
    sources, index, target = torch.randn(2, 2, 2, 4, 4, 4), torch.tensor([[0, 1], [0, 1]]), torch.tensor([2, 2])
    batch = net(sources, index, torch.tensor([[True, True], [True, False]]), target)
    single = net(sources[1:, :1], index[1:, :1], torch.ones(1, 1, dtype=torch.bool), target[1:])
    both = net(sources[:1], index[:1], torch.ones(1, 2, dtype=torch.bool), target[:1])
    torch.testing.assert_close(batch, torch.cat([both, single]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"grid": [4, 4, 5]}, "multiple of patch"),
        ({"dim": 15}, "multiple of heads"),
        ({"depth": 0}, "depth"),
        ({"dropout": 1.0}, "dropout"),
        ({"patch": 0}, "patch"),
    ],
)
def test_inconsistent_settings_are_refused_at_construction(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_transformer(**overrides)


def test_unknown_keywords_and_missing_sources_are_refused():
    with pytest.raises(ValueError, match="unknown keyword"):
        resolve_transformer_config(width=3)
    net = tiny_transformer()
    with pytest.raises(ValueError, match="at least one present source"):
        net(torch.randn(1, 1, 2, 4, 4, 4), torch.tensor([[0]]), torch.tensor([[False]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="sources must be"):
        net(torch.randn(1, 1, 2, 4, 4, 8), torch.tensor([[0]]), torch.tensor([[True]]), torch.tensor([2]))


def tiny_bundle(path, transformer: dict | None = None):
    torch.manual_seed(0)
    config = dict(AUTOENCODER)
    autoencoder = build_autoencoder(config.pop("kind"), **config)
    net = build_transformer(latent_channels=2, modalities=MODALITIES, **(transformer or TRANSFORMER))
    metadata = {
        "name": "tiny-vae-transformer",
        "family": "vae_transformer",
        "version": "0.0.1",
        "description": "untrained test network",
        "modalities": MODALITIES,
        "pairs": [["CT", "MR_T2"], ["MR_T1", "MR_T2"]],
        "source_sets": [{"sources": ["CT", "MR_T1"], "target": "MR_T2"}],
        "spacing": [12.0, 12.0, 12.0],
        "grid": None,  # whole volumes: the translator slides the transformer over the latents
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": {
            "modalities": MODALITIES,
            "autoencoder": AUTOENCODER,
            "transformer": TRANSFORMER,
            "scale_factor": 1.5,
        },  # fmt: skip
        "training": {},
        "metrics": {},
        "licence": "Apache-2.0",
        "limitations": "untrained",
    }
    weights = {"autoencoder.safetensors": autoencoder.state_dict(), "transformer.safetensors": net.state_dict()}
    return save_bundle(path, metadata, weights)


def test_the_translator_pads_a_small_volume_and_takes_one_or_several_listed_sources(tmp_path):
    translator = get_translator_class("vae_transformer")(tiny_bundle(tmp_path / "b"), "cpu")
    assert translator.multi_source and not translator.stochastic and translator.latent_grid == (4, 4, 4)
    fractions = []
    one = translator.translate(torch.randn(1, 1, 5, 8, 7), "CT", "MR_T2", progress=fractions.append)
    assert one.shape == (1, 1, 5, 8, 7) and fractions[-1] == 1.0
    both = translator.translate_sources(torch.randn(1, 2, 8, 8, 8), ["CT", "MR_T1"], "MR_T2")
    assert both.shape == (1, 1, 8, 8, 8)
    with pytest.raises(InputError, match="does not list"):
        translator.translate_sources(torch.randn(1, 2, 8, 8, 8), ["MR_T1", "MR_T2"], "CT")


def test_a_volume_of_several_windows_is_encoded_once_and_only_the_transformer_slides(tmp_path):
    translator = get_translator_class("vae_transformer")(tiny_bundle(tmp_path / "b"), "cpu")
    calls = {"encode": 0, "transformer": 0}
    encode, transformer = translator.autoencoder.encode, translator.transformer.forward

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    translator.autoencoder.encode = counted("encode", encode)
    translator.transformer.forward = counted("transformer", transformer)
    out = translator.translate(torch.randn(1, 1, 13, 8, 11), "CT", "MR_T2")
    assert out.shape == (1, 1, 13, 8, 11) and torch.isfinite(out).all()
    # Padded to 14 x 8 x 12 voxels = 7 x 4 x 6 latents; 4^3 latent windows at half overlap: 3 x 1 x 2 of them.
    assert calls == {"encode": 1, "transformer": 6}
    # One window that is the whole latent volume: exactly encode -> transformer -> decode, as in training.
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.inference_mode():
        latents = encode(x) * translator.scale_factor
        index, present, target = torch.tensor([[0]]), torch.ones(1, 1, dtype=torch.bool), torch.tensor([2])
        expected = translator.autoencoder.decode(transformer(latents[:, None], index, present, target) / 1.5)
    torch.testing.assert_close(translator.translate(x, "CT", "MR_T2"), expected)


def test_a_volume_larger_than_the_autoencoder_tile_is_encoded_and_decoded_in_blended_tiles(tmp_path, monkeypatch):
    translator = get_translator_class("vae_transformer")(tiny_bundle(tmp_path / "b"), "cpu")
    shapes = []
    encode = translator.autoencoder.encode
    translator.autoencoder.encode = lambda x: shapes.append(tuple(x.shape[2:])) or encode(x)
    monkeypatch.setattr(vae_translator, "TILE", (8, 8, 8))
    out = translator.translate(torch.randn(1, 1, 13, 8, 11), "CT", "MR_T2")
    assert out.shape == (1, 1, 13, 8, 11) and torch.isfinite(out).all()
    # 14 x 8 x 12 padded voxels in 8^3 tiles at a stride of 6 (aligned to the down-sampling): 2 x 1 x 2 tiles.
    assert shapes == [(8, 8, 8)] * 4


def test_translation_is_deterministic_and_cancellable(tmp_path):
    from MedTransCore.errors import CancelledError

    translator = get_translator_class("vae_transformer")(tiny_bundle(tmp_path / "b"), "cpu")
    source = torch.randn(1, 1, 8, 8, 8)
    torch.testing.assert_close(
        translator.translate(source, "CT", "MR_T2", seed=1), translator.translate(source, "CT", "MR_T2", seed=2)
    )
    with pytest.raises(CancelledError):
        translator.translate(source, "CT", "MR_T2", cancel=lambda: True)


def test_a_bundle_whose_weights_do_not_match_its_config_is_refused(tmp_path):
    bundle = tiny_bundle(tmp_path / "b", transformer={**TRANSFORMER, "dim": 32})
    with pytest.raises(BundleError, match="does not match"):
        get_translator_class("vae_transformer")(bundle, "cpu")
