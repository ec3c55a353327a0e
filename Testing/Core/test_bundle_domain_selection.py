"""The default model is chosen by the input's domain: never a phantom model (nor a baseline) for a patient scan."""

import json

import pytest

from MedTransCore.bundles import choose_bundle, find_bundle, save_bundle, select_bundle, validate_metadata
from MedTransCore.domain import InputDomain
from MedTransCore.errors import BundleError, InputError

SKULL_STRIPPED_SCAN = InputDomain("brain", "skull-stripped", "unknown")
WHOLE_HEAD_SCAN = InputDomain("head", "whole-head", "unknown")
PHANTOM_HEAD = InputDomain("head", "whole-head", "phantom")


def identity_bundle(path, *, pairs=(("MR_T2", "MR_FLAIR"),), domain=None, source_sets=None, family="identity"):
    """A weightless bundle (the identity family needs none) with the given pairs, domain and source sets."""
    modalities = sorted({m for pair in pairs for m in pair} | {"MR_T1", "MR_T1C", "MR_T2", "MR_FLAIR"})
    meta = {
        "name": path.name,
        "family": family,
        "version": "0.0.1",
        "description": "test bundle",
        "modalities": modalities,
        "pairs": [list(p) for p in pairs],
        "spacing": None,
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": {},
        "training": {"command": "none", "data": "none"},
        "metrics": {},
        "licence": "Apache-2.0",
    }
    if domain is not None:
        meta["domain"] = domain
    if source_sets is not None:
        meta["source_sets"] = source_sets
    return save_bundle(path, meta, {})


def test_a_real_brain_is_refused_for_a_pair_only_phantom_models_have_and_the_error_names_them():
    # MR_T1 -> MR_PD: only phantom-head-unet among the trained models, plus the baselines.
    with pytest.raises(InputError) as err:
        choose_bundle("MR_T1", "MR_PD", domain=SKULL_STRIPPED_SCAN)
    message = str(err.value)
    assert "no installed model fits this input" in message and "skull-stripped brain" in message
    assert "phantom-head-unet (head, whole-head, phantom data)" in message
    assert "identity" in message and "histogram-matching" in message
    assert "--model NAME" in message


def test_a_whole_head_scan_never_silently_gets_the_phantom_cbct_model():
    with pytest.raises(InputError, match="phantom-head-cbct-ct-unet"):
        choose_bundle("CBCT", "CT", domain=WHOLE_HEAD_SCAN)


def test_a_named_phantom_model_runs_on_a_real_scan_with_a_warning_naming_both_domains():
    bundle, warnings = choose_bundle("MR_T1", "MR_PD", "phantom-head-unet", domain=SKULL_STRIPPED_SCAN)
    assert bundle.name == "phantom-head-unet"
    assert len(warnings) == 1
    assert "head, whole-head, phantom data" in warnings[0] and "skull-stripped brain" in warnings[0]


def test_a_named_baseline_that_needs_no_training_data_gives_no_warning():
    bundle, warnings = choose_bundle("MR_T1", "MR_PD", "identity", domain=SKULL_STRIPPED_SCAN)
    assert bundle.name == "identity" and warnings == []


def test_a_phantom_input_still_gets_the_phantom_models_the_demo_uses():
    assert choose_bundle("CBCT", "CT", domain=PHANTOM_HEAD) == (find_bundle("phantom-head-cbct-ct-unet"), [])
    assert choose_bundle("MR_T2", "MR_T1", domain=PHANTOM_HEAD)[0].name == "phantom-head-unet"
    # A pair no trained model has: the phantom-quantile baseline is honest for a phantom.
    assert choose_bundle("CBCT", "CT_ARTERIAL", domain=PHANTOM_HEAD)[0].name == "histogram-matching"


def test_a_skull_stripped_brain_gets_the_brain_model_and_a_whole_head_does_not():
    source, target = find_bundle("brain-mr-slice-unet").pairs[0]  # whatever its cross-validation listed
    assert choose_bundle(source, target, domain=SKULL_STRIPPED_SCAN)[0].name == "brain-mr-slice-unet"
    with pytest.raises(InputError, match="brain-mr-slice-unet"):
        choose_bundle(source, target, domain=WHOLE_HEAD_SCAN)


def test_without_a_domain_the_choice_is_by_pair_and_family_as_before():
    assert select_bundle("CBCT", "CT").name == "phantom-head-cbct-ct-unet"
    assert choose_bundle("MR_T1", "MR_PD") == (find_bundle("phantom-head-unet"), [])


def test_a_real_data_model_like_the_input_is_the_default_and_a_bundle_without_a_domain_is_not(
    isolated_user_models,
):
    real = {"anatomy": "brain", "preprocessing": "skull-stripped", "training_data": "real"}
    # Metadata only (no weights are loaded to choose): two trained-family bundles for the pair.
    identity_bundle(isolated_user_models / "undeclared", pairs=[("MR_T1", "MR_PD")], family="unet")
    identity_bundle(isolated_user_models / "brain-real", pairs=[("MR_T1", "MR_PD")], domain=real, family="unet")
    assert choose_bundle("MR_T1", "MR_PD", domain=SKULL_STRIPPED_SCAN)[0].name == "brain-real"
    # Named, a bundle that declares no domain runs with a warning saying so.
    _, warnings = choose_bundle("MR_T1", "MR_PD", "undeclared", domain=SKULL_STRIPPED_SCAN)
    assert "does not declare its training domain" in warnings[0]


def test_a_bundle_supports_a_source_set_in_any_order_and_single_sources_through_its_pairs(isolated_user_models):
    sets = [{"sources": ["MR_T1", "MR_T1C", "MR_FLAIR"], "target": "MR_T2"}]
    bundle = identity_bundle(isolated_user_models / "multi", pairs=[("MR_T1", "MR_T2")], source_sets=sets)
    assert bundle.supports_sources(["MR_FLAIR", "MR_T1", "MR_T1C"], "MR_T2")
    assert bundle.supports_sources(["MR_T1"], "MR_T2")
    assert not bundle.supports_sources(["MR_T1", "MR_T1C"], "MR_T2")
    assert not bundle.supports_sources(["MR_T1", "MR_T1C", "MR_FLAIR"], "MR_T1")
    assert choose_bundle(["MR_T1C", "MR_FLAIR", "MR_T1"], "MR_T2")[0].name == "multi"
    with pytest.raises(InputError, match=r"MR_T1 \+ MR_T1C->MR_T2"):
        choose_bundle(["MR_T1", "MR_T1C"], "MR_T2", "multi")


def valid_metadata(**extra):
    meta = {
        "schema_version": 1,
        "name": "x",
        "family": "identity",
        "version": "1",
        "description": "",
        "modalities": ["MR_T1", "MR_T1C", "MR_T2", "MR_FLAIR"],
        "pairs": [["MR_T1", "MR_T2"]],
        "spacing": None,
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": {},
        "training": {},
        "metrics": {},
        "licence": "Apache-2.0",
        "weights": {},
    }
    return {**meta, **extra}


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"domain": "brain"}, "field 'domain' must be an object"),
        (
            {"domain": {"anatomy": "brain", "preprocessing": "stripped", "training_data": "real"}},
            "domain.preprocessing",
        ),
        ({"domain": {"anatomy": "brain", "preprocessing": "any"}}, "domain.training_data"),
        ({"domain": {"anatomy": "brain", "preprocessing": "any", "training_data": "real", "x": 1}}, "unknown key 'x'"),
        ({"source_sets": [{"sources": ["MR_T1", "MR_XX"], "target": "MR_T2"}]}, "unknown modality 'MR_XX'"),
        ({"source_sets": [{"sources": ["MR_T1", "MR_T2"], "target": "MR_T2"}]}, "target MR_T2 is among its sources"),
        ({"source_sets": [{"sources": ["MR_T1", "MR_T1"], "target": "MR_T2"}]}, "names a source twice"),
        ({"source_sets": [{"sources": ["MR_T1"], "target": "MR_T2"}]}, "list one source in 'pairs'"),
        (
            {"source_sets": [{"sources": ["MR_T1", "MR_T1C"], "target": "MR_T2"}] * 2},
            "listed twice",
        ),
    ],
)
def test_metadata_validation_names_a_bad_domain_or_source_set(extra, problem):
    with pytest.raises(BundleError, match=problem):
        validate_metadata(valid_metadata(**extra))


def test_metadata_without_a_domain_or_source_sets_stays_valid_and_every_shipped_bundle_declares_its_domain():
    validate_metadata(valid_metadata())
    validate_metadata(valid_metadata(source_sets=[{"sources": ["MR_T1C", "MR_T1"], "target": "MR_T2"}]))
    for name in ("brain-mr-slice-unet", "phantom-head-unet", "phantom-head-cbct-ct-unet", "phantom-head-aldm"):
        assert "domain" in json.loads((find_bundle(name).path / "metadata.json").read_text())
    assert find_bundle("identity").domain["training_data"] == "none"
    assert find_bundle("histogram-matching").domain["training_data"] == "phantom"
