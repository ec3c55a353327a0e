"""The ``vid2vid`` family: the autoregressive slice generator, its config checks, and its translator run from a
bundle through the real pipeline (geometry, progress, cancellation)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedTransCore.bundles import save_bundle
from MedTransCore.errors import CancelledError, InputError
from MedTransCore.models.registry import get_translator_class
from MedTransCore.models.vid2vid import Vid2VidTranslator, translate_sequence
from MedTransCore.models.vid2vid_network import build_vid2vid
from MedTransCore.translate import translate_image

from .helpers import assert_same_geometry, ct_like_volume

TINY = {"context": 1, "previous": 2, "features": [4, 4, 4, 8, 8, 4]}


def trained_like(config: dict | None = None, seed: int = 0) -> torch.nn.Module:
    """A tiny generator whose zero-initialised residual layer is randomised (as training would move it)."""
    torch.manual_seed(seed)
    network = build_vid2vid(**(config or TINY))
    torch.nn.init.normal_(network.backbone.final_conv.weight, std=0.3)
    return network.eval()


def vid2vid_bundle(path, network: torch.nn.Module, config: dict | None = None):
    metadata = {
        "name": "tiny-vid2vid",
        "family": "vid2vid",
        "version": "0.0.1",
        "description": "untrained test network",
        "modalities": ["CBCT", "CT"],
        "pairs": [["CBCT", "CT"]],
        "spacing": [2.0, 2.0, 2.5],
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": config or TINY,
        "training": {},
        "metrics": {},
        "licence": "Apache-2.0",
        "orientation": "LPS",
    }
    return save_bundle(path, metadata, {"model.safetensors": network.state_dict()})


@pytest.mark.parametrize("upsample", ["nontrainable", "deconv", "pixelshuffle"])
@pytest.mark.parametrize("norm", ["batch", "instance", None])
def test_the_generator_keeps_the_slice_shape_for_any_size(upsample, norm):
    network = build_vid2vid(**TINY, upsample=upsample, norm=norm).eval()
    assert network.step(torch.randn(2, 3, 13, 18), []).shape == (2, 1, 13, 18)
    assert network(torch.randn(2, 7, 13, 18)).shape == (2, 5, 13, 18)  # 5 slices of a 7-slice clip


@pytest.mark.parametrize(
    "bad",
    [
        {"context": -1},
        {"context": 1.5},
        {"previous": 9},
        {"features": [4, 8, 16]},
        {"features": [4, 4, 4, 8, 8, 0]},
        {"norm": "group"},
        {"upsample": "nearest"},
        {"dropout": 1.0},
    ],
)
def test_a_bad_network_config_is_a_value_error(bad):
    with pytest.raises(ValueError):
        build_vid2vid(**{**TINY, **bad})


def test_bad_inputs_are_value_errors():
    network = build_vid2vid(**TINY)
    with pytest.raises(ValueError, match="sources must be"):
        network.step(torch.randn(1, 5, 8, 8), [])
    with pytest.raises(ValueError, match="generated slice"):
        network.step(torch.randn(1, 3, 8, 8), [torch.randn(1, 1, 4, 4)])
    with pytest.raises(ValueError, match="clip must be"):
        network(torch.randn(1, 2, 8, 8))


def test_an_untrained_generator_returns_the_source_slice():
    network = build_vid2vid(**TINY).eval()
    sources = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(network.step(sources, [torch.randn(2, 1, 16, 16)]), sources[:, 1:2])


def test_the_next_slice_depends_on_the_generated_history_and_only_its_last_slices():
    network = trained_like()
    sources = torch.randn(1, 3, 16, 16)
    older, last = torch.randn(1, 1, 16, 16), torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        base = network.step(sources, [older, last])
        assert not torch.allclose(base, network.step(sources, [older, last + 0.5]))  # the history is read
        assert not torch.allclose(base, network.step(sources, [last]))  # one missing slot differs
        assert not torch.allclose(base, network.step(sources, []))  # "no previous" differs
        # Only the last `previous` slices are read.
        torch.testing.assert_close(base, network.step(sources, [torch.randn(1, 1, 16, 16), older, last]))


def test_inference_walks_the_volume_with_the_rollout_training_uses():
    network = trained_like(seed=1)
    volume = torch.rand(9, 16, 16) * 0.5 - 0.5  # signal everywhere: no cropping
    with torch.no_grad():
        walked = translate_sequence(network, volume)
        # Training's rollout over a clip whose ends are the edge slices repeated (as the slice sampler does).
        clip = volume[torch.arange(-1, 10).clamp(0, 8)][None]
        torch.testing.assert_close(walked, network(clip)[0])
        # The first slice has no history at all: no ground truth, nothing but "no previous".
        first = network.step(clip[:, 0:3], [])
        torch.testing.assert_close(walked[0], first[0, 0])


def test_a_bundle_translates_a_volume_through_the_pipeline_keeping_the_source_geometry(tmp_path):
    bundle = vid2vid_bundle(tmp_path / "tiny", trained_like())
    image = ct_like_volume(size=(20, 18, 12), spacing=(1.5, 1.8, 2.5))
    stages = []
    result = translate_image(
        image, "CBCT", "CT", model=bundle.path, device="cpu", progress=lambda f, s: stages.append((f, s))
    )
    assert_same_geometry(result.image, image)
    assert result.settings["family"] == "vid2vid"
    assert np.isfinite(sitk.GetArrayViewFromImage(result.image)).all()
    assert stages[-1][0] == 1.0 and [f for f, _ in stages] == sorted(f for f, _ in stages)
    assert sum("vid2vid" in s for _, s in stages) >= 3  # the slice walk reports its own progress


def test_the_translator_reports_progress_to_one_refuses_other_pairs_and_can_be_cancelled(tmp_path):
    bundle = vid2vid_bundle(tmp_path / "tiny", trained_like())
    translator = get_translator_class("vid2vid")(bundle, "cpu")
    assert isinstance(translator, Vid2VidTranslator) and translator.window_bytes_per_voxel(bundle) > 0
    source = torch.rand(1, 1, 12, 16, 16) - 0.5
    fractions = []
    out = translator.translate(source, "CBCT", "CT", progress=fractions.append)
    assert out.shape == source.shape and len(fractions) >= 3
    assert fractions[-1] == 1.0 and fractions == sorted(fractions)
    with pytest.raises(InputError, match="does not support"):
        translator.translate(source, "CT", "CBCT")
    polls = []
    with pytest.raises(CancelledError):
        translator.translate(source, "CBCT", "CT", cancel=lambda: polls.append(1) or len(polls) > 1)
    assert len(polls) == 2  # stopped in the middle of the walk, at the second poll
