import json

import pytest
import torch

from MedTransCore.bundles import find_bundle, installed_bundles, load_bundle, save_bundle
from MedTransCore.errors import BundleError


def metadata(**overrides) -> dict:
    meta = {
        "name": "tiny",
        "family": "identity",
        "version": "0.0.1",
        "description": "test bundle",
        "modalities": ["CT", "CBCT"],
        "pairs": [["CBCT", "CT"]],
        "spacing": [2.0, 2.0, 2.0],
        "grid": [16, 16, 16],
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": {},
        "training": {"command": "none", "data": "none"},
        "metrics": {},
        "licence": "Apache-2.0",
    }
    meta.update(overrides)
    return meta


@pytest.fixture
def bundle(tmp_path):
    return save_bundle(tmp_path / "tiny", metadata(), {"model.safetensors": {"w": torch.arange(6.0).reshape(2, 3)}})


def test_a_saved_bundle_loads_its_weights_back(bundle):
    weights = bundle.load_weights("model.safetensors")
    assert torch.equal(weights["w"], torch.arange(6.0).reshape(2, 3))
    assert bundle.supports("CBCT", "CT") and not bundle.supports("CT", "CBCT")


def test_a_tampered_weight_file_is_rejected_by_its_hash(bundle):
    path = bundle.path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle.path).load_weights("model.safetensors")


def test_a_missing_weight_file_is_a_clear_error(bundle):
    (bundle.path / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle.path)


@pytest.mark.parametrize(
    "change, words",
    [
        ({"family": 3}, "wrong type"),
        ({"modalities": ["CT", "XRAY"]}, "unknown modality"),
        ({"pairs": [["CT", "MR_T1"]]}, "pair"),
        ({"grid": [16, 16]}, "grid"),
        ({"schema_version": 99}, "schema_version"),
    ],
)
def test_a_bad_schema_is_rejected_with_the_field_named(bundle, change, words):
    path = bundle.path / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(change)
    path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=words):
        load_bundle(bundle.path)


def test_a_missing_field_and_broken_json_are_rejected(bundle):
    path = bundle.path / "metadata.json"
    meta = json.loads(path.read_text())
    del meta["licence"]
    path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="licence"):
        load_bundle(bundle.path)
    path.write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle.path)


def test_weights_are_never_unpickled(tmp_path, bundle):
    # A pickle renamed to .safetensors must fail to load rather than execute anything.
    path = bundle.path / "model.safetensors"
    torch.save({"w": torch.zeros(1)}, path)
    meta = json.loads((bundle.path / "metadata.json").read_text())
    from MedTransCore.bundles import sha256_file

    meta["weights"]["model.safetensors"] = sha256_file(path)
    (bundle.path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="cannot read"):
        load_bundle(bundle.path).load_weights("model.safetensors")


def test_user_bundles_are_listed_beside_the_shipped_ones(isolated_user_models):
    save_bundle(isolated_user_models / "mine", metadata(name="mine"), {})
    names = [b.name for b in installed_bundles()]
    assert "mine" in names and "identity" in names
    assert find_bundle("mine").path == isolated_user_models / "mine"
    with pytest.raises(BundleError, match="no model named"):
        find_bundle("nonexistent-model")


def test_saving_over_an_existing_bundle_is_refused(bundle):
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(bundle.path, metadata(), {})
