"""The ``unet`` family: network construction, modality conditioning, loading from a bundle, the family registry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedTransCore.bundles import find_bundle
from MedTransCore.errors import BundleError, InputError
from MedTransCore.models.registry import FAMILIES, get_translator_class
from MedTransCore.models.unet import FiLMNorm, UNetTranslator, build_unet_network
from MedTransCore.phantoms import generate_phantom
from MedTransCore.translate import translate_image
from Testing.Training.helpers import TINY_UNET as TINY
from Testing.Training.helpers import tiny_unet_bundle


@pytest.mark.parametrize(
    "bad",
    [
        {"architecture": "transformer"},
        {"num_modalities": 0},
        {"channels": [4, 8, 16], "strides": [2]},
        {"channels": []},
        {"dropout": 1.5},
        {"architecture": "basic_unet", "channels": [4, 8]},
        {"norm": None},  # nothing for FiLM to condition
        {"conditioning": "cross-attention"},
    ],
)
def test_a_bad_network_config_is_a_value_error(bad):
    with pytest.raises(ValueError):
        build_unet_network(**{**TINY, **bad})


@pytest.mark.parametrize(
    "config", [TINY, {"num_modalities": 2, "architecture": "basic_unet", "channels": [4, 4, 8, 8, 16, 4]}]
)
def test_any_window_size_comes_back_with_its_own_shape(config):
    network = build_unet_network(**config).eval()
    out = network(torch.randn(2, 1, 9, 14, 17), torch.tensor([0, 1]), torch.tensor([1, 0]))
    assert out.shape == (2, 1, 9, 14, 17)


def test_film_conditioning_lets_the_target_modality_change_the_output_and_the_residual_variant_starts_from_the_source():
    torch.manual_seed(0)
    network = build_unet_network(**TINY).eval()
    x = torch.randn(1, 1, 8, 8, 8)
    films = [m for m in network.modules() if isinstance(m, FiLMNorm)]
    assert films and len(films) == sum(isinstance(m, torch.nn.InstanceNorm3d) for m in network.modules())
    untrained = (network(x, torch.tensor([0]), torch.tensor([t])) for t in (1, 2))
    torch.testing.assert_close(*untrained)  # FiLM starts as the identity map
    for film in films:
        torch.nn.init.normal_(film.film.weight)
    to_one, to_two = (network(x, torch.tensor([0]), torch.tensor([t])) for t in (1, 2))
    assert not torch.allclose(to_one, to_two)
    residual = build_unet_network(**TINY, residual=True).eval()
    for p in residual.parameters():
        torch.nn.init.zeros_(p)
    torch.testing.assert_close(residual(x, torch.tensor([0]), torch.tensor([1])), x)


def test_a_unet_translator_loads_its_bundle_and_translates_a_window_as_the_network_does(tmp_path):
    torch.manual_seed(1)
    network = build_unet_network(**TINY).eval()
    bundle = tiny_unet_bundle(tmp_path / "tiny", network)
    translator = get_translator_class("unet")(bundle, "cpu")
    assert isinstance(translator, UNetTranslator) and translator.family == "unet"
    x = torch.randn(2, 1, 8, 8, 8)
    out = translator.translate(x, "MR_T1", "CT")
    torch.testing.assert_close(out, network(x, torch.tensor([2, 2]), torch.tensor([0, 0])))
    with pytest.raises(InputError, match="does not support"):
        translator.translate(x, "CT", "MR_T1")


def _zero_correction_standardised_bundle(path):
    """A histogram-standardised residual unet whose network adds nothing (zero output layer)."""
    config = {**TINY, "residual": True}
    network = build_unet_network(**config)
    torch.nn.init.zeros_(network.backbone[-1].weight)
    torch.nn.init.zeros_(network.backbone[-1].bias)
    reference = find_bundle("histogram-matching").load_weights("histograms.safetensors")
    return tiny_unet_bundle(path, network, config, {k: reference[k] for k in ("CT", "CBCT")})


def test_a_histogram_standardised_residual_unet_starts_exactly_at_the_histogram_matching_baseline(tmp_path):
    bundle = _zero_correction_standardised_bundle(tmp_path / "hm-unet")
    case = generate_phantom("head", 3, (40, 40, 32), (2.0, 2.0, 2.0), modalities=["CBCT"])  # the bundle's spacing
    ours = translate_image(case.images["CBCT"], "CBCT", "CT", model=bundle.path, device="cpu")
    theirs = translate_image(case.images["CBCT"], "CBCT", "CT", model="histogram-matching", device="cpu")
    assert ours.bundle.metadata["input_standardisation"] == "histogram_matching"
    a, b = (sitk.GetArrayFromImage(r.image).astype(np.float64) for r in (ours, theirs))
    np.testing.assert_allclose(a, b, atol=0.5)  # HU; the network runs in float32
    assert np.abs(a - sitk.GetArrayFromImage(case.images["CBCT"])).mean() > 5.0  # and it did change the CBCT


def test_a_standardised_residual_unet_keeps_the_source_resolution_on_a_finer_grid_than_its_own(tmp_path):
    # The bundle works at 2 mm, the source is 1.5 mm: resampling the output there and back would blur it, so the
    # result would no longer be a voxel-wise function of the source. With no correction it must be exactly one.
    bundle = _zero_correction_standardised_bundle(tmp_path / "hm-unet")
    case = generate_phantom("head", 3, (48, 48, 40), (1.5, 1.5, 1.5), modalities=["CBCT"])
    result = translate_image(case.images["CBCT"], "CBCT", "CT", model=bundle.path, device="cpu")
    source = sitk.GetArrayFromImage(case.images["CBCT"]).ravel()
    output = sitk.GetArrayFromImage(result.image).ravel().astype(np.float64)
    order = np.argsort(source, kind="stable")
    assert np.all(np.diff(output[order]) >= -1e-3), "the output is not a monotone voxel-wise map of the source"
    assert np.abs(output - source).mean() > 5.0


def test_a_unet_bundle_with_an_unknown_standardisation_is_a_bundle_error(tmp_path):
    bundle = tiny_unet_bundle(tmp_path / "tiny")
    bundle.metadata["input_standardisation"] = "z-score"
    with pytest.raises(BundleError, match="input_standardisation"):
        UNetTranslator(bundle, "cpu")


def test_the_registry_maps_families_lazily_and_names_unknown_ones():
    assert {"unet", "aldm", "identity", "histogram_matching"} <= set(FAMILIES)
    assert FAMILIES["unet"] is UNetTranslator
    with pytest.raises(BundleError, match="unknown model family"):
        get_translator_class("vid2vid-nope")


def test_a_per_target_network_predicts_every_modality_in_one_pass_and_the_target_selects_its_channel():
    torch.manual_seed(2)
    network = build_unet_network(**TINY, per_target_outputs=True).eval()
    x, sources = torch.randn(2, 1, 8, 8, 8), torch.tensor([0, 2])
    every = network.forward_all(x, sources)
    assert every.shape == (2, 3, 8, 8, 8)
    torch.testing.assert_close(network(x, sources, torch.tensor([1, 0])), torch.stack([every[0, 1:2], every[1, 0:1]]))
    plain = build_unet_network(**TINY, per_target_outputs=True, condition_on_source=False, norm=None)
    assert plain(x, sources, torch.tensor([1, 0])).shape == (2, 1, 8, 8, 8)  # nothing to condition: no FiLM
    with pytest.raises(ValueError, match="per_target_outputs"):
        build_unet_network(**TINY).forward_all(x, sources)


def test_concatenated_one_hot_conditioning_works_without_normalisation_layers():
    torch.manual_seed(3)
    network = build_unet_network(**{**TINY, "norm": None, "conditioning": "concat"}).eval()
    assert not [m for m in network.modules() if isinstance(m, FiLMNorm)]
    x = torch.randn(1, 1, 8, 8, 8)
    to_one, to_two = (network(x, torch.tensor([0]), torch.tensor([t])) for t in (1, 2))
    assert not torch.allclose(to_one, to_two)
