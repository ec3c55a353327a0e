"""Several sources in (three acquired MR sequences, the missing one out), output masks and bundle orientations.

A multi-source model is exercised without a trained network: :class:`MeanOfSourcesTranslator`, a test-only family
registered for the duration of a test (:func:`mean_family`), returns the mean of its source channels.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedTransCore.bundles import save_bundle
from MedTransCore.errors import InputError
from MedTransCore.modalities import default_params, denormalise, normalisation_params, normalise
from MedTransCore.models import base, registry
from MedTransCore.models.base import Translator
from MedTransCore.preprocess import body_mask
from MedTransCore.translate import translate_image

from .helpers import assert_same_geometry, oblique_direction

MEAN_FAMILY = "test_mean_of_sources"


class MeanOfSourcesTranslator(Translator):
    """TEST FIXTURE, not a model: the voxel-wise mean of its normalised source channels.

    It takes several sources (``multi_source``), so the pipeline's multi-channel path runs without a trained
    network; every window it is handed is recorded in :attr:`seen` (what the model saw).
    """

    family = MEAN_FAMILY
    multi_source = True
    seen: list[torch.Tensor] = []

    def translate(self, source, source_modality, target_modality, *, steps=None, seed=0, progress=None, cancel=None):
        self.check_pair(source_modality, target_modality)
        type(self).seen.append(source.detach().clone())
        return source.clone()

    def translate_sources(
        self, sources, source_modalities, target_modality, *, steps=None, seed=0, progress=None, cancel=None
    ):
        if sources.shape[1] == 1:
            return super().translate_sources(sources, source_modalities, target_modality, steps=steps, seed=seed)
        self.check_sources(source_modalities, target_modality)
        type(self).seen.append(sources.detach().clone())
        return sources.mean(dim=1, keepdim=True)


@pytest.fixture
def mean_family(monkeypatch):
    """Register :class:`MeanOfSourcesTranslator` as a bundle family for one test (the registry has no test hook)."""
    monkeypatch.setitem(registry._FAMILY_PATHS, MEAN_FAMILY, f"{__name__}:MeanOfSourcesTranslator")
    monkeypatch.setattr(registry, "FAMILY_NAMES", (*registry.FAMILY_NAMES, MEAN_FAMILY))
    monkeypatch.setitem(registry.FAMILIES._loaded, MEAN_FAMILY, MeanOfSourcesTranslator)
    monkeypatch.setattr(MeanOfSourcesTranslator, "seen", [])
    return MeanOfSourcesTranslator


def source_sets(*sets: tuple[list[str], str]) -> list[dict]:
    """The bundle's ``source_sets`` field: which sets of sources it accepts for which target."""
    return [{"sources": list(sources), "target": target} for sources, target in sets]


def tiny_bundle(path, *, family=MEAN_FAMILY, pairs=(("MR_T1", "MR_T2"),), sets=(), spacing=None, **extra):
    """A real bundle folder (no weights) of ``family``; ``extra`` adds metadata fields (output_mask, orientation)."""
    modalities = sorted({m for pair in pairs for m in pair} | {m for s, t in sets for m in [*s, t]})
    meta = {
        "name": path.name,
        "family": family,
        "version": "0.0.1",
        "description": "test fixture",
        "modalities": modalities,
        "pairs": [list(p) for p in pairs],
        "spacing": list(spacing) if spacing else None,
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": {},
        "training": {"command": "none", "data": "none"},
        "metrics": {},
        "licence": "Apache-2.0",
        "limitations": "a test fixture, not a model",
        **({"source_sets": source_sets(*sets)} if sets else {}),
        **extra,
    }
    return save_bundle(path, meta, {})


def brain(size=(20, 18, 12), spacing=(1.0, 1.1, 2.0), origin=(-10.0, -9.0, -11.0), direction=None, scale=1.0, seed=0):
    """A skull-stripped-like MR: an ellipsoid of tissue with a textured intensity, exactly 0 outside it."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in size[::-1]], indexing="ij")
    inside = x**2 + y**2 + z**2 < 0.7
    array = np.where(inside, scale * (300.0 + 100.0 * x + rng.normal(0, 5, x.shape)), 0.0)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def expected_mean(first: sitk.Image, second: sitk.Image) -> np.ndarray:
    """What the pipeline must compute for two MR sources through the mean fixture, by hand: the second resampled
    onto the first's grid (linear, 0 outside), each normalised in its own body mask, the mean de-normalised."""
    on_first = sitk.Resample(second, first, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    channels = []
    for image, modality in ((first, "MR_T1"), (on_first, "MR_FLAIR")):
        array = sitk.GetArrayFromImage(image)
        mask = sitk.GetArrayFromImage(body_mask(image, modality)).astype(bool)
        channels.append(normalise(array.astype(np.float64), normalisation_params(array, modality, mask)))
    return denormalise((channels[0] + channels[1]) / 2, default_params("MR_T2"))


def test_two_sources_on_different_grids_are_resampled_onto_the_first_and_the_result_keeps_its_geometry(
    tmp_path, mean_family
):
    bundle = tiny_bundle(tmp_path / "mean", sets=((["MR_T1", "MR_FLAIR"], "MR_T2"),))
    first = brain(direction=oblique_direction())
    # Another grid: coarser, shifted, axis-aligned, and twice as bright (each source is normalised on its own).
    second = brain(size=(14, 13, 10), spacing=(1.6, 1.7, 2.6), origin=(-11.0, -10.5, -12.0), scale=2.0, seed=1)
    result = translate_image(
        first, "MR_T1", "MR_T2", extra_sources={"MR_FLAIR": second}, model=bundle.path, device="cpu"
    )
    assert_same_geometry(result.image, first, tol=0)
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.image), expected_mean(first, second), atol=1e-3)
    (window,) = mean_family.seen
    assert window.shape == (1, 2, *first.GetSize()[::-1])  # channels in the order given, first source first
    assert result.settings["source_modality"] == "MR_T1"
    assert result.settings["source_modalities"] == ["MR_T1", "MR_FLAIR"]


def test_sources_that_do_not_overlap_are_refused_naming_the_source(tmp_path, mean_family):
    bundle = tiny_bundle(tmp_path / "mean", sets=((["MR_T1", "MR_FLAIR"], "MR_T2"),))
    far = brain(origin=(500.0, 0.0, 0.0))
    with pytest.raises(InputError, match="MR_FLAIR source does not overlap the MR_T1 source") as err:
        translate_image(brain(), "MR_T1", "MR_T2", extra_sources={"MR_FLAIR": far}, model=bundle.path, device="cpu")
    assert "\n" not in str(err.value)
    assert not mean_family.seen


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"MR_T1": None}, "MR_T1 is given twice"),
        ({"MR_T2": None}, "target MR_T2 is among the sources"),
        ({"MR_X": None}, "unknown modality 'MR_X'"),
    ],
)
def test_a_source_set_that_makes_no_sense_is_refused_before_any_work(tmp_path, mean_family, extra, words):
    bundle = tiny_bundle(tmp_path / "mean", sets=((["MR_T1", "MR_FLAIR"], "MR_T2"),))
    extra = {key: brain() for key in extra}
    with pytest.raises(InputError, match=words):
        translate_image(brain(), "MR_T1", "MR_T2", extra_sources=extra, model=bundle.path, device="cpu")
    assert not mean_family.seen


def test_a_model_that_lists_no_such_source_set_refuses_several_sources(tmp_path):
    bundle = tiny_bundle(tmp_path / "single", family="identity")
    with pytest.raises(InputError, match="does not support MR_T1 \\+ MR_FLAIR->MR_T2"):
        translate_image(brain(), "MR_T1", "MR_T2", extra_sources={"MR_FLAIR": brain()}, model=bundle.path)


def test_a_single_source_family_refuses_several_sources_even_when_its_bundle_lists_them(tmp_path):
    bundle = tiny_bundle(tmp_path / "single", family="identity", sets=((["MR_T1", "MR_FLAIR"], "MR_T2"),))
    with pytest.raises(InputError, match="takes one source"):
        translate_image(brain(), "MR_T1", "MR_T2", extra_sources={"MR_FLAIR": brain()}, model=bundle.path)


def test_a_multi_source_model_refuses_a_set_it_does_not_list(tmp_path, mean_family):
    bundle = tiny_bundle(tmp_path / "mean", sets=((["MR_T1", "MR_FLAIR"], "MR_T2"),))
    with pytest.raises(InputError, match="does not support MR_T1 \\+ MR_PD->MR_T2"):
        translate_image(brain(), "MR_T1", "MR_T2", extra_sources={"MR_PD": brain()}, model=bundle.path)
    assert not mean_family.seen


@pytest.mark.parametrize("model", ["identity", "histogram-matching"])
def test_a_single_source_gives_the_same_result_as_the_single_source_call_it_always_made(monkeypatch, model):
    image = brain(direction=oblique_direction())
    pair = ("CBCT", "CT") if model == "identity" else ("MR_T1", "MR_T2")
    if model == "identity":
        image = sitk.ShiftScale(image, -1000.0, 1.0)  # CT-like: air at -1000 HU
    new = translate_image(image, *pair, model=model, device="cpu")
    assert new.settings["source_modalities"] == [pair[0]]

    def translate_as_before(self, sources, source_modalities, target_modality, **kwargs):
        assert sources.shape[1] == 1 and list(source_modalities) == [pair[0]]
        return self.translate(sources, source_modalities[0], target_modality, **kwargs)

    monkeypatch.setattr(base.Translator, "translate_sources", translate_as_before)
    before = translate_image(image, *pair, model=model, device="cpu", extra_sources={})
    assert sitk.GetArrayViewFromImage(new.image).tobytes() == sitk.GetArrayViewFromImage(before.image).tobytes()
    assert_same_geometry(new.image, image, tol=0)


def test_an_output_masked_to_the_source_is_exactly_zero_outside_its_non_zero_region(tmp_path):
    array = sitk.GetArrayFromImage(brain(size=(24, 22, 16), spacing=(1.0, 1.0, 1.0)))
    array[8, 10:12, 11:13] = 0.0  # a ventricle-like hole inside the brain: inside, not background
    source = sitk.GetImageFromArray(array)
    # A coarse model grid: the way back blurs the brain's edge into the background.
    kwargs = {"family": "identity", "pairs": (("MR_T1", "MR_T2"),), "spacing": (3.0, 3.0, 3.0)}
    masked = tiny_bundle(tmp_path / "masked", output_mask="source_nonzero", **kwargs)
    plain = tiny_bundle(tmp_path / "plain", **kwargs)
    result = sitk.GetArrayFromImage(translate_image(source, "MR_T1", "MR_T2", model=masked.path).image)
    unmasked = sitk.GetArrayFromImage(translate_image(source, "MR_T1", "MR_T2", model=plain.path).image)
    outside = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray((array != 0).astype(np.uint8)))) == 0
    assert np.abs(unmasked[outside]).max() > 1.0  # without the mask, the blur leaks outside the brain
    assert np.all(result[outside] == 0.0)
    np.testing.assert_array_equal(result[~outside], unmasked[~outside])
    assert result[8, 10:12, 11:13].max() > 0  # the hole is inside: not forced to 0


def test_a_bundle_orientation_feeds_the_model_that_orientation_and_returns_the_result_on_the_source_geometry(
    tmp_path, mean_family
):
    bundle = tiny_bundle(tmp_path / "lps", pairs=(("MR_T1", "MR_T2"),), orientation="LPS")
    # Permuted and flipped axes (RAS-like, slices along y): a proper rotation, anisotropic spacing.
    direction = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    assert np.isclose(np.linalg.det(np.reshape(direction, (3, 3))), 1.0)
    image = brain(size=(20, 16, 12), spacing=(1.0, 1.5, 2.0), direction=direction)
    result = translate_image(image, "MR_T1", "MR_T2", model=bundle.path, device="cpu")
    assert result.image.GetSize() == image.GetSize()
    assert result.image.GetSpacing() == image.GetSpacing()
    assert result.image.GetOrigin() == image.GetOrigin()
    assert result.image.GetDirection() == image.GetDirection()
    # The target's own intensity scale differs (T1 -> T2), the voxel arrangement must not.
    out, source = sitk.GetArrayFromImage(result.image).ravel(), sitk.GetArrayFromImage(image).ravel()
    assert np.corrcoef(out, source)[0, 1] > 0.999
    (window,) = mean_family.seen
    lps = sitk.DICOMOrient(image, "LPS")
    assert window.shape[2:] == lps.GetSize()[::-1] != image.GetSize()[::-1]
    on_lps = sitk.GetArrayFromImage(lps)
    seen = window[0, 0].numpy()
    assert np.corrcoef(seen.ravel(), on_lps.ravel())[0, 1] > 0.999  # the model saw the LPS axes


def test_a_bundle_without_orientation_sees_the_file_axes_unchanged(tmp_path, mean_family):
    bundle = tiny_bundle(tmp_path / "plain", pairs=(("MR_T1", "MR_T2"),))
    direction = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    image = brain(size=(20, 16, 12), direction=direction)
    translate_image(image, "MR_T1", "MR_T2", model=bundle.path, device="cpu")
    assert mean_family.seen[0].shape[2:] == image.GetSize()[::-1]
