import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.bundles import _default_rank, installed_bundles, save_bundle
from MedTransCore.errors import CancelledError, InputError, MemoryGuardError
from MedTransCore.translate import resolve_device, select_model, translate_image

from .helpers import assert_same_geometry, ct_like_volume


def tiny_identity_bundle(path, spacing=(1.5, 1.5, 3.0), grid=(8, 8, 8)):
    meta = {
        "name": path.name,
        "family": "identity",
        "version": "0.0.1",
        "description": "identity on a coarse grid with sliding windows",
        "modalities": ["CT", "CBCT"],
        "pairs": [["CT", "CBCT"], ["CBCT", "CT"]],
        "spacing": list(spacing) if spacing else None,
        "grid": list(grid) if grid else None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": {},
        "training": {"command": "none", "data": "none"},
        "metrics": {},
        "licence": "Apache-2.0",
    }
    return save_bundle(path, meta, {})


def test_the_identity_round_trip_returns_the_input_on_its_own_oblique_anisotropic_geometry():
    image = ct_like_volume()
    result = translate_image(image, "CBCT", "CT", model="identity", device="cpu")
    assert_same_geometry(result.image, image, tol=1e-6)
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(result.image), sitk.GetArrayFromImage(image), rtol=1e-6, atol=1e-6 * 3000
    )
    assert result.settings["model"] == "identity" and result.image.GetPixelID() == sitk.sitkFloat32


def test_sliding_windows_on_a_resampled_grid_keep_the_source_geometry(tmp_path):
    bundle = tiny_identity_bundle(tmp_path / "coarse")
    image = ct_like_volume(size=(30, 26, 14))
    progress = []
    result = translate_image(image, "CBCT", "CT", model=bundle.path, progress=lambda f, s: progress.append(f))
    assert_same_geometry(result.image, image)
    # Linear resampling there and back blurs edges only; the interior of the ellipsoid survives.
    inner = sitk.GetArrayFromImage(image)[6:8, 10:16, 12:18]
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.image)[6:8, 10:16, 12:18], inner, atol=150)
    assert progress[-1] == 1.0 and progress == sorted(progress)


def test_the_default_model_is_the_best_installed_for_the_pair():
    bundle = select_model("CBCT", "CT")
    assert bundle.supports("CBCT", "CT")
    assert bundle.family != "identity"  # a histogram-matching baseline or a trained model is preferred


def test_within_a_family_the_default_is_the_specialist_with_the_fewest_pairs(isolated_user_models):
    # Three identity-family bundles support CT->CBCT: the shipped one (every pair), "a-wide" (2 pairs) and
    # "z-narrow" (that pair alone). Neither the name order nor the folder order decides: the specialist wins.
    tiny_identity_bundle(isolated_user_models / "a-wide")
    narrow = tiny_identity_bundle(isolated_user_models / "z-narrow")
    metadata = json.loads((narrow.path / "metadata.json").read_text())
    (narrow.path / "metadata.json").write_text(json.dumps({**metadata, "pairs": [["CT", "CBCT"]]}))
    # (histogram matching, a family listed before identity, supports every pair: compare within the family)
    identities = [b for b in installed_bundles() if b.family == "identity" and b.supports("CT", "CBCT")]
    assert len(identities) == 3 and min(identities, key=_default_rank).name == "z-narrow"
    assert select_model("CBCT", "CT").family != "identity"  # a better family still comes first


def test_an_unsupported_pair_names_what_the_model_supports(tmp_path):
    bundle = tiny_identity_bundle(tmp_path / "only-cbct")
    with pytest.raises(InputError, match="CBCT->CT"):
        translate_image(ct_like_volume(), "MR_T1", "CT", model=bundle.path)


def test_cancel_stops_the_run():
    with pytest.raises(CancelledError):
        translate_image(ct_like_volume(), "CBCT", "CT", model="identity", cancel=lambda: True)


def test_the_memory_guard_refuses_and_names_the_limit(monkeypatch):
    monkeypatch.setenv("MEDTRANS_MEMORY_LIMIT_MB", "50")
    with pytest.raises(MemoryGuardError, match=r"50 MB.*MEDTRANS_MEMORY_LIMIT_MB"):
        translate_image(ct_like_volume(), "CBCT", "CT", model="identity")


def test_cuda_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InputError, match="no CUDA"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_a_ct_declared_as_mr_gets_a_warning_and_strict_refuses_it():
    image = ct_like_volume()
    result = translate_image(image, "MR_T1", "MR_T2", model="identity")
    assert any("non-negative" in w for w in result.warnings)
    with pytest.raises(InputError, match="strict"):
        translate_image(image, "MR_T1", "MR_T2", model="identity", strict=True)


def test_histogram_matching_maps_cbct_towards_the_ct_histogram():
    from MedTransCore.phantoms import generate_phantom

    case = generate_phantom("head", seed=3, shape=(40, 40, 40), spacing=(4.0, 4.0, 4.0), modalities=["CBCT", "CT"])
    cbct, ct = case.images["CBCT"], case.images["CT"]
    result = translate_image(cbct, "CBCT", "CT", model="histogram-matching")
    mask = sitk.GetArrayFromImage(case.body_mask).astype(bool)
    error_before = np.abs(sitk.GetArrayFromImage(cbct) - sitk.GetArrayFromImage(ct))[mask].mean()
    error_after = np.abs(sitk.GetArrayFromImage(result.image) - sitk.GetArrayFromImage(ct))[mask].mean()
    assert error_after < error_before
