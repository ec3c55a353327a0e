"""Every key of a run config is checked: a misspelled one stops ``medtrans-train`` before anything runs, naming the
key, the keys allowed there and the closest one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medtrans_training.cli import main as train_main
from medtrans_training.config import load_config

from .helpers import tiny_config, write_simple_cases

CONFIGS = Path(__file__).parents[2] / "training" / "configs"


def train_cli(*argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        train_main([str(a) for a in argv])
    return exit_info.value.code


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(tiny_config(write_simple_cases(tmp_path / "data"))))
    return path


def test_a_misspelled_training_key_is_refused_before_training_starts(tmp_path, config_file, capsys):
    run = tmp_path / "run"
    code = train_cli("train", config_file, "--run-dir", run, "--set", "train.stepz=1", "--device", "cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("error: ") and "unknown key train.stepz" in err[0]
    assert "allowed keys of train: " in err[0] and "steps" in err[0] and "did you mean train.steps?" in err[0]
    assert not run.exists()


@pytest.mark.parametrize(
    "override, key, suggestion",
    [
        ("data.val_case=[case2]", "data.val_case", "data.val_cases"),
        ("data.phantom.val_seed=[1000, 1002]", "data.phantom.val_seed", "data.phantom.val_seeds"),
        ("data.augment.flip_probability=0.1", "data.augment.flip_probability", "data.augment.flip_prob"),
        ("model.network.chanels=[4, 8]", "model.network.chanels", "model.network.channels"),
        ("model.loss.gann=0.1", "model.loss.gann", "model.loss.gan"),
        ("model.optim.generator.learning_rate=0.1", "model.optim.generator.learning_rate", None),
        ("export.license=MIT", "export.license", "export.licence"),
    ],
)
def test_an_unknown_key_anywhere_in_the_config_is_named_with_a_close_match(config_file, override, key, suggestion):
    with pytest.raises(ValueError, match=f"unknown key {key};") as error:
        load_config(config_file, [override])
    if suggestion:
        assert f"did you mean {suggestion}?" in str(error.value)
    assert str(config_file) in str(error.value)


@pytest.mark.parametrize(
    "config, override, words",
    [
        ("aldm_tiny_autoencoder.yaml", "model.codebook_reset.evry=5", "unknown key model.codebook_reset.evry"),
        ("aldm_tiny_diffusion.yaml", "model.scheduler.beta_strat=0.1", "did you mean model.scheduler.beta_start?"),
        ("aldm_tiny_diffusion.yaml", "model.network.num_res_block=1", "model.network"),
        ("aldm_tiny_spade.yaml", "model.latent_cach=false", "did you mean model.latent_cache?"),
    ],
)
def test_the_aldm_stages_check_their_model_keys_too(config, override, words):
    with pytest.raises(ValueError, match=words):
        load_config(CONFIGS / config, [override])


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_and_pipeline_passes_the_key_check(name):
    from medtrans_training.recipe import load_recipe

    assert all(stage.config["stage"] for stage in load_recipe(CONFIGS / name).stages)
