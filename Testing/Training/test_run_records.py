"""``run.json`` says for every run which step its checkpoint reached and how it ended, and the bundle keeps it, so a
run that was stopped or interrupted can be rebuilt from the bundle's metadata."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from medtrans_training.cli import main as train_main
from medtrans_training.export import export_run
from medtrans_training.stages.unet import UNetStage

from .helpers import tiny_config, write_simple_cases


def write_config(tmp_path, **train) -> str:
    root = write_simple_cases(tmp_path / "data", count=4)
    config = tiny_config(root, data={"test_cases": ["case3"]}, train={"save_every": 2, **train})
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    return str(path)


def runs_of(run_dir) -> list[dict]:
    return json.loads((run_dir / "run.json").read_text())["runs"]


def fail_at(monkeypatch, step_to_fail: int, action) -> None:
    """Make the ``step_to_fail``-th training step (0-based) call ``action`` instead of training."""
    original = UNetStage.training_step

    def training_step(self, batch, step):
        if step == step_to_fail:
            action()
        return original(self, batch, step)

    monkeypatch.setattr(UNetStage, "training_step", training_step)


def test_a_finished_run_records_the_step_it_reached(tmp_path):
    run = tmp_path / "run"
    train_main(["train", write_config(tmp_path), "--run-dir", str(run), "--device", "cpu"])
    [record] = runs_of(run)
    assert record["start_step"] == 0 and record["target_steps"] == 3 and record["step_reached"] == 3
    assert record["status"] == "finished" and record["command"].startswith("medtrans-train train ")


def test_an_interrupted_run_records_its_last_checkpoint_and_the_bundle_keeps_every_run(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fail_at(monkeypatch, 2, lambda: (_ for _ in ()).throw(KeyboardInterrupt()))  # Ctrl-C during step 3
    with pytest.raises(KeyboardInterrupt):
        train_main(["train", write_config(tmp_path), "--run-dir", str(run), "--device", "cpu"])
    [first] = runs_of(run)
    assert first["status"] == "interrupted" and first["reason"] == "KeyboardInterrupt"
    assert first["step_reached"] == 2 == torch.load(run / "checkpoint.pt", weights_only=True)["step"]

    monkeypatch.undo()
    train_main(["train", "--resume", str(run), "--set", "train.steps=4", "--device", "cpu"])
    first, second = runs_of(run)
    assert second["start_step"] == 2 and second["target_steps"] == 4 and second["step_reached"] == 4
    assert second["status"] == "finished" and "--resume" in second["command"]

    training = export_run(run, tmp_path / "bundle", keep_all_pairs=True, device="cpu").metadata["training"]
    assert [r["status"] for r in training["runs"]] == ["interrupted", "finished"]
    assert [r["step_reached"] for r in training["runs"]] == [2, 4] and training["steps"] == 4


def test_sigterm_is_recorded_as_an_interruption(tmp_path, monkeypatch):
    run = tmp_path / "run"
    fail_at(monkeypatch, 1, lambda: os.kill(os.getpid(), signal.SIGTERM))
    with pytest.raises(KeyboardInterrupt):
        train_main(["train", write_config(tmp_path), "--run-dir", str(run), "--device", "cpu"])
    [record] = runs_of(run)
    assert record["status"] == "interrupted" and record["reason"] == "TrainingInterrupted"
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_stop_at_ends_a_run_early_on_the_full_learning_rate_curve(tmp_path):
    config = write_config(tmp_path, steps=6, lr_schedule="cosine", warmup_steps=1, log_every=1)
    full, stopped = tmp_path / "full", tmp_path / "stopped"
    train_main(["train", config, "--run-dir", str(full), "--device", "cpu"])
    train_main(["train", config, "--run-dir", str(stopped), "--device", "cpu", "--set", "train.stop_at=3"])

    def rates(run_dir):
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [line["lr"] for line in lines if line["split"] == "train"]

    assert rates(stopped) == rates(full)[:3]
    [record] = runs_of(stopped)
    assert record["status"] == "stopped" and record["step_reached"] == 3 and record["target_steps"] == 6
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["step"] == 3
