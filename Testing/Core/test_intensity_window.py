"""A bundle's own intensity window (``normalisation.intensity_window``): the network sees a narrow HU window, the
result keeps the source's bone, air and metal, the inverse is exact inside the window, bundles without a window run
as before, and bad windows are refused when the bundle loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedTransCore.bundles import find_bundle, load_bundle, save_bundle
from MedTransCore.errors import BundleError, InputError
from MedTransCore.intensity_window import bundle_windows, keep_outside_window
from MedTransCore.modalities import denormalise, normalisation_params, normalise, normalise_with_scheme
from MedTransCore.models.unet import build_unet_network
from MedTransCore.translate import translate_image

from .helpers import ct_like_volume

W400_L0 = [-200, 200]
WINDOWS = {"CT": W400_L0, "CT_ARTERIAL": W400_L0}
TINY_NETWORK = {"num_modalities": 2, "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}
AIR, FAT, SOFT, CONTRAST, BONE, METAL = -1000.0, -100.0, 40.0, 150.0, 1200.0, 3000.0


def windowed_bundle(
    path,
    *,
    family="identity",
    windows=None,
    modalities=("CT", "CT_ARTERIAL"),
    pairs=(("CT", "CT_ARTERIAL"),),
    **fields,
):
    """A bundle declaring ``windows`` (default W400/L0 on CT and CT_ARTERIAL); ``family="unet"`` makes an untrained
    2 mm, 16^3 network (it acts inside the window: its output is not the source)."""
    weights = {}
    meta = {
        "name": path.name,
        "family": family,
        "version": "0.0.1",
        "description": "intensity window test bundle",
        "modalities": list(modalities),
        "pairs": [list(p) for p in pairs],
        "spacing": None,
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities", "intensity_window": windows or WINDOWS},
        "sampler": None,
        "network": {},
        "training": {"command": "none", "data": "none"},
        "metrics": {},
        "licence": "Apache-2.0",
    }
    if family == "unet":
        torch.manual_seed(0)
        weights = {"model.safetensors": build_unet_network(**TINY_NETWORK).state_dict()}
        meta.update(spacing=[2.0, 2.0, 2.0], grid=[16, 16, 16], network=TINY_NETWORK)
    meta.update(fields)
    return save_bundle(path, meta, weights)


def tissue_volume(size=(24, 20, 16), spacing=(1.0, 1.0, 2.0), seed=0) -> sitk.Image:
    """Air around a body: fat shell, soft tissue, a contrast-filled core (all inside W400/L0), a bone ring and a
    metal implant (outside it), with noise, on an oblique grid."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in size[::-1]], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    array = np.where(r < 0.9, SOFT + rng.normal(0, 5, r.shape), AIR + rng.normal(0, 10, r.shape))
    array = np.where((r > 0.8) & (r < 0.9), FAT, array)
    array = np.where((r > 0.45) & (r < 0.6), BONE + rng.normal(0, 20, r.shape), array)
    array = np.where(r < 0.2, CONTRAST, array)
    array[size[2] // 2, size[1] // 2 + 2 : size[1] // 2 + 4, size[0] // 2 + 3 : size[0] // 2 + 6] = METAL
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin((-5.0, 3.0, 11.0))
    return image


def outside(array: np.ndarray, window=W400_L0) -> np.ndarray:
    return (array < window[0]) | (array > window[1])


def test_the_inverse_is_exact_inside_the_window_and_the_input_is_clipped_outside_it():
    hu = np.concatenate([np.linspace(-200, 200, 4001), [-1024.0, -1000.0, -201.0, 201.0, 1200.0, 3000.0]])
    params = normalisation_params(hu, "CT", window=(-200, 200))
    assert params == {"low": -200.0, "high": 200.0}
    normalised = normalise_with_scheme(hu, params, clip=True)
    inside = ~outside(hu)
    np.testing.assert_allclose(denormalise(normalised[inside], params), hu[inside], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(normalised[~inside], np.sign(hu[~inside]))
    # float32, as the pipeline computes: exact to float precision.
    hu32 = hu[inside].astype(np.float32)
    np.testing.assert_allclose(denormalise(normalise(hu32, params), params), hu32, rtol=0, atol=1e-4)


def test_a_100_hu_enhancement_is_half_a_unit_in_a_w400_window_instead_of_a_fortieth():
    narrow = normalisation_params(np.zeros(1), "CT_ARTERIAL", window=(-200, 200))
    default = normalisation_params(np.zeros(1), "CT_ARTERIAL")
    assert normalise(140.0, narrow) - normalise(40.0, narrow) == pytest.approx(0.5)
    assert normalise(140.0, default) - normalise(40.0, default) == pytest.approx(200 / 4024)


def test_without_a_window_the_normalisation_is_the_old_unclipped_affine_map():
    params = normalisation_params(np.array([0.0]), "CT")
    assert params == {"low": -1024.0, "high": 3000.0}
    assert normalise_with_scheme(np.array([5000.0]), params)[0] > 1.0


def test_an_mr_modality_takes_no_window():
    with pytest.raises(InputError, match="CT-like modalities only"):
        normalisation_params(np.ones(3), "MR_T1", window=(0, 500))


@pytest.mark.parametrize("orientation", [None, "RAS"])
def test_an_identity_translation_in_a_window_returns_every_voxel_of_the_source(tmp_path, orientation):
    extra = {"orientation": orientation} if orientation else {}
    bundle = windowed_bundle(tmp_path / "identity-w400", **extra)
    image = tissue_volume()
    image.SetDirection(tuple(np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], float).ravel()))
    result = translate_image(image, "CT", "CT_ARTERIAL", model=bundle.path, device="cpu").image
    source, out = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(result)
    far = outside(source)
    assert far.sum() > 500 and (~far).sum() > 500
    np.testing.assert_array_equal(out[far], source[far])  # air, bone and metal: the source's own values
    np.testing.assert_allclose(out[~far], source[~far], rtol=0, atol=1e-4)  # the exact inverse inside


def test_the_network_sees_the_source_clipped_to_its_window(tmp_path, monkeypatch):
    from MedTransCore.models.baselines import IdentityTranslator

    seen = []
    translate = IdentityTranslator.translate

    def spy(self, source, *args, **kwargs):
        seen.append(source.clone())
        return translate(self, source, *args, **kwargs)

    monkeypatch.setattr(IdentityTranslator, "translate", spy)
    bundle = windowed_bundle(tmp_path / "identity-w400")
    image = tissue_volume()
    translate_image(image, "CT", "CT_ARTERIAL", model=bundle.path, device="cpu")
    network_input = torch.cat([x.flatten() for x in seen]).numpy()
    expected = np.clip((sitk.GetArrayFromImage(image).ravel() + 200.0) / 200.0 - 1.0, -1.0, 1.0)
    np.testing.assert_allclose(np.sort(network_input), np.sort(expected), rtol=0, atol=1e-6)


def test_bone_air_and_metal_pass_through_unchanged_where_a_network_acts_inside_the_window(tmp_path):
    bundle = windowed_bundle(tmp_path / "unet-w400", family="unet")
    image = tissue_volume()
    result = translate_image(image, "CT", "CT_ARTERIAL", model=bundle.path, device="cpu").image
    source, out = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(result)
    far = outside(source)
    for value in (AIR, BONE, METAL):
        assert np.any(np.abs(source[far] - value) < 100), value
    np.testing.assert_array_equal(out[far], source[far])
    # Inside, the (untrained) network's output, clipped to the target's window: not the source.
    assert out[~far].min() >= -200 and out[~far].max() <= 200
    assert np.abs(out[~far] - source[~far]).max() > 1.0


def test_the_source_window_and_the_target_window_may_differ(tmp_path):
    windows = {"CT": W400_L0, "CT_ARTERIAL": [-200, 600]}
    bundle = windowed_bundle(tmp_path / "identity-wide-target", windows=windows)
    image = tissue_volume()
    result = translate_image(image, "CT", "CT_ARTERIAL", model=bundle.path, device="cpu").image
    source, out = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(result)
    far = outside(source)
    np.testing.assert_array_equal(out[far], source[far])
    # The identity's normalised value mapped through the target's window: x -> 2 x + 200.
    np.testing.assert_allclose(out[~far], 2 * source[~far] + 200, rtol=0, atol=1e-3)


def test_kept_source_voxels_have_no_uncertainty_and_the_rest_is_clipped_to_the_target_window():
    source = sitk.GetImageFromArray(np.array([[[-1000.0, 0.0, 150.0, 1200.0]]], np.float32))
    result = sitk.GetImageFromArray(np.array([[[-150.0, 20.0, 260.0, 180.0]]], np.float32))
    std = sitk.GetImageFromArray(np.full((1, 1, 4), 7.0, np.float32))
    out, spread = keep_outside_window(result, source, (-200.0, 200.0), (-200.0, 200.0), std)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out)[0, 0], [-1000.0, 20.0, 200.0, 1200.0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(spread)[0, 0], [0.0, 7.0, 7.0, 0.0])
    assert keep_outside_window(result, source, None, None, std) == (result, std)


def mr_like(image: sitk.Image) -> sitk.Image:
    out = sitk.GetImageFromArray(np.clip(sitk.GetArrayFromImage(image) + 1000.0, 0, None).astype(np.float32))
    out.CopyInformation(image)
    return out


# Recorded before intensity windows existed: (model, source, target, volume) -> (sum, sum of squares, 7 voxels).
SHIPPED = {
    "identity CBCT to CT": (
        ("identity", "CBCT", "CT", lambda: ct_like_volume(size=(16, 14, 10), seed=1)),
        (-1649086.820766449, 1731214154.8734496),
        [-998.2721, -993.3331, 45.9171, -1002.7488, 47.0107, -999.8648, -996.6068],
    ),
    "histogram matching CT to CT_ARTERIAL": (
        ("histogram-matching", "CT", "CT_ARTERIAL", lambda: ct_like_volume(size=(16, 14, 10), seed=2)),
        (-1660281.5622335672, 1862959401.643569),
        [-1023.9162, -1023.947, 536.4788, -1023.939, 59.5186, -1023.9119, -1023.9025],
    ),
    "histogram matching MR_T1 to CT": (
        ("histogram-matching", "MR_T1", "CT", lambda: mr_like(ct_like_volume(size=(16, 14, 10), seed=3))),
        (-1660860.173657298, 1857866112.9070616),
        [-1019.7899, -1022.6232, 428.8546, -1024.0, 673.1815, -1021.0717, -1020.2623],
    ),
    "a standardised residual unet (voxel-wise base) CBCT to CT": (
        ("phantom-head-cbct-ct-unet", "CBCT", "CT", lambda: ct_like_volume(size=(16, 14, 10), seed=4)),
        (-1552008.6947299736, 1849128488.1161132),
        [-996.6687, -1003.7437, 37.1232, -1008.8, 116.6027, -1002.1281, -1005.009],
    ),
}


@pytest.mark.parametrize("case, sums, voxels", SHIPPED.values(), ids=SHIPPED.keys())
def test_shipped_bundles_without_a_window_translate_as_they_did_before(case, sums, voxels):
    model, source, target, volume = case
    result = translate_image(volume(), source, target, model=model, device="cpu").image
    flat = sitk.GetArrayFromImage(result).astype(np.float64).ravel()
    assert bundle_windows(find_bundle(model).metadata) == {}
    np.testing.assert_allclose([flat.sum(), (flat**2).sum()], sums, rtol=1e-6)
    np.testing.assert_allclose(flat[np.linspace(0, flat.size - 1, 7).astype(int)], voxels, rtol=0, atol=2e-3)


def rewrite(bundle_dir, change) -> None:
    path = bundle_dir / "metadata.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def set_windows(windows):
    return lambda meta: meta["normalisation"].update(intensity_window=windows)


BAD_WINDOWS = {
    "low above high": (set_windows({"CT": [200, -200], "CT_ARTERIAL": W400_L0}), "low < high"),
    "low equal to high": (set_windows({"CT": [0, 0], "CT_ARTERIAL": W400_L0}), "low < high"),
    "an unknown modality": (set_windows({"CT": W400_L0, "PET": [0, 10]}), "unknown modality 'PET'"),
    "an MR modality": (set_windows({"MR_T1": [0, 500]}), "MR_T1 is an MR modality"),
    "one number": (set_windows({"CT": [-200], "CT_ARTERIAL": W400_L0}), r"must be \[low, high\] in HU"),
    "a text bound": (set_windows({"CT": ["-200", 200], "CT_ARTERIAL": W400_L0}), r"must be \[low, high\] in HU"),
    "an empty mapping": (set_windows({}), "must map CT-like modalities"),
    "a list": (set_windows([-200, 200]), "must map CT-like modalities"),
    "a modality the bundle lacks": (
        set_windows({**WINDOWS, "CT_VENOUS": W400_L0}),
        "CT_VENOUS is not among the bundle's modalities",
    ),
    "a pair with one side windowed": (set_windows({"CT": W400_L0}), "but not for CT_ARTERIAL"),
    "a cross-kind pair": (
        lambda m: m.update(modalities=[*m["modalities"], "MR_T1"], pairs=[*m["pairs"], ["MR_T1", "CT"]]),
        "MR_T1 -> CT pairs MR with a windowed CT-like modality",
    ),
    "a cross-kind source set": (
        lambda m: m.update(
            modalities=[*m["modalities"], "MR_T1"],
            source_sets=[{"sources": ["CT_ARTERIAL", "MR_T1"], "target": "CT"}],
        ),
        "CT_ARTERIAL \\+ MR_T1 -> CT pairs MR",
    ),
    "input standardisation": (
        lambda m: m.update(input_standardisation="histogram_matching"),
        "cannot be combined with input_standardisation",
    ),
}


@pytest.mark.parametrize("change, words", BAD_WINDOWS.values(), ids=BAD_WINDOWS.keys())
def test_a_bad_window_is_refused_when_the_bundle_loads_with_a_message_naming_the_field(tmp_path, change, words):
    bundle = windowed_bundle(tmp_path / "bad-window")
    rewrite(bundle.path, change)
    with pytest.raises(BundleError, match=words) as error:
        load_bundle(bundle.path)
    assert "bad-window" in str(error.value) and "normalisation.intensity_window" in str(error.value)


def test_a_good_window_loads_as_floats_and_pairs_without_one_may_sit_beside_it(tmp_path):
    bundle = windowed_bundle(
        tmp_path / "good",
        modalities=("CT", "CBCT", "CT_ARTERIAL", "CT_VENOUS"),
        pairs=(("CT", "CT_ARTERIAL"), ("CBCT", "CT_VENOUS")),
    )
    assert bundle_windows(bundle.metadata) == {"CT": (-200.0, 200.0), "CT_ARTERIAL": (-200.0, 200.0)}
