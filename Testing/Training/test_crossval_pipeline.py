"""Cross-validation of a multi-stage family: every fold trains every stage without its held-out subject."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medtrans_training.cli import main as train_main
from medtrans_training.crossval import export_final, subjects_of
from medtrans_training.recipe import load_recipe
from MedTransCore.bundles import load_bundle
from MedTransCore.errors import InputError

from .helpers import write_simple_cases

CONFIGS = Path(__file__).parents[2] / "training" / "configs"
STAGES = ("autoencoder", "transformer", "decoder")


def pipeline_file(folder: Path) -> Path:
    path = folder / "pipeline.yaml"
    stages = [
        {"name": "autoencoder", "config": str(CONFIGS / "vae_tiny_autoencoder.yaml")},
        {"name": "transformer", "config": str(CONFIGS / "vae_tiny_transformer.yaml"),
         "runs": {"model.autoencoder_run": "autoencoder"}},
        {"name": "decoder", "config": str(CONFIGS / "vae_tiny_decoder.yaml"),
         "runs": {"model.transformer_run": "transformer"}},
    ]  # fmt: skip
    path.write_text(yaml.safe_dump({"pipeline": stages}))
    return path


def real_data(root: Path) -> list[str]:
    """Overrides that point every tiny stage at skull-stripped-like subjects in the simple layout."""
    return [
        "data.source=folder",
        f"data.root={root}",
        "data.layout=simple",
        "data.modalities=[MR_T1, MR_T2]",
        "data.spacing=[2.0, 2.0, 2.0]",
        "data.patch=[16, 16, 16]",
        "data.normalisation=brain_percentiles",
        "export.domain={anatomy: brain, preprocessing: skull-stripped, training_data: real}",
    ]


@pytest.mark.slow
def test_every_fold_trains_every_stage_on_its_own_training_subjects_and_scores_the_last_one(tmp_path):
    root = write_simple_cases(tmp_path / "subjects", count=3, size=16)
    sets = [arg for o in real_data(root) for arg in ("--set", o)]
    out = tmp_path / "cv"
    train_main(["crossval", str(pipeline_file(tmp_path)), "--out", str(out), "--device", "cpu", *sets])
    summary = json.loads((out / "crossval.json").read_text())
    assert summary["subjects"] == ["case0", "case1", "case2"]
    assert set(summary["requests"]) == {"MR_T1->MR_T2", "MR_T2->MR_T1"}
    for case in summary["subjects"]:
        fold = out / f"fold-{case}"
        configs = {stage: json.loads((fold / stage / "config.json").read_text()) for stage in STAGES}
        assert all(c["data"]["test_cases"] == [case] for c in configs.values())
        assert configs["transformer"]["model"]["autoencoder_run"] == str(fold / "autoencoder")
        assert configs["decoder"]["model"]["transformer_run"] == str(fold / "transformer")
        bundle = load_bundle(fold / "bundle")
        assert bundle.family == "vae_transformer" and bundle.metadata["grid"] is None  # the stage's: whole volumes
        assert bundle.metadata["output_mask"] == "source_nonzero"
        assert bundle.metadata["normalisation"]["mr_scheme"] == "brain_percentiles"


@pytest.mark.slow
def test_the_final_pipeline_model_lists_only_what_the_folds_earned(tmp_path):
    root = write_simple_cases(tmp_path / "subjects", count=3, size=16)
    recipe = load_recipe(pipeline_file(tmp_path), real_data(root))
    summary = {
        "protocol": "p",
        "listing_rule": "r",
        "subjects": ["case0", "case1", "case2"],
        "requests": {
            "MR_T1->MR_T2": {"listed": True, "subjects": ["case0", "case1"]},
            "MR_T2->MR_T1": {"listed": False, "subjects": ["case0", "case1"]},
        },
    }
    subjects = subjects_of(recipe.final)
    bundle = export_final(
        recipe, tmp_path / "cv", tmp_path / "b", summary, subjects, command="c", log=print, device="cpu"
    )
    bundle = load_bundle(bundle.path)
    assert bundle.pairs == [("MR_T1", "MR_T2")] and bundle.metadata["training"]["stage"] == "vae_transformer_decoder"
    assert {p.name for p in (tmp_path / "cv" / "all").iterdir()} == set(STAGES)
    assert "vae_transformer" in bundle.metadata["stages"]


def test_a_pipeline_must_name_earlier_stages_and_distinct_names(tmp_path):
    tiny = str(CONFIGS / "vae_tiny_autoencoder.yaml")
    cases = {
        "later": [{"name": "a", "config": tiny, "runs": {"model.autoencoder_run": "b"}}, {"name": "b", "config": tiny}],
        "twice": [{"name": "a", "config": tiny}, {"name": "a", "config": tiny}],
        "keys": [{"name": "a", "config": tiny, "extra": {}}],
        "set": [{"name": "a", "config": tiny, "set": {"train.steps": 2}}],
    }
    messages = {"later": "not an earlier stage", "twice": "used twice", "keys": "must be", "set": "list of key=value"}
    for key, stages in cases.items():
        path = tmp_path / f"{key}.yaml"
        path.write_text(yaml.safe_dump({"pipeline": stages}))
        with pytest.raises(InputError, match=messages[key]):
            load_recipe(path)


def test_a_plain_run_config_is_a_one_stage_recipe_trained_in_the_fold_folder_itself(tmp_path):
    recipe = load_recipe(CONFIGS / "vae_tiny_autoencoder.yaml", ["train.steps=5"])
    assert len(recipe.stages) == 1 and recipe.final["train"]["steps"] == 5
    assert recipe.run_dirs(tmp_path) == {"aldm_autoencoder": tmp_path}


def test_an_override_prefixed_with_a_stage_name_changes_that_stage_only(tmp_path):
    path = pipeline_file(tmp_path)
    recipe = load_recipe(path, ["train.steps=4", "transformer:model.network.depth=3", "decoder:train.steps=1"])
    steps = {s.name: s.config["train"]["steps"] for s in recipe.stages}
    assert steps == {"autoencoder": 4, "transformer": 4, "decoder": 1}
    assert recipe.stages[1].config["model"]["network"]["depth"] == 3
    with pytest.raises(InputError, match="unknown stage"):
        load_recipe(path, ["spade:train.steps=1"])
