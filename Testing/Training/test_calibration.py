"""The issue-15 calibration: the plain 2D UNet trained leave-one-subject-out and its table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medtrans_training.calibration import (
    CropSampler,
    build_plain_unet,
    bundle_rows,
    calibrate,
    calibration_table,
    main,
    translate_plain,
)
from medtrans_training.crossval import METRICS, subjects_of

from .helpers import tiny_config, write_simple_cases


def _config(root):
    return {"data": {"source": "folder", "root": str(root), "layout": "simple", "modalities": ["MR_T1", "MR_T2"]}}


def test_crops_are_the_requested_size_and_come_from_brain_slices_only():
    volume = np.zeros((6, 2, 40, 30), np.float32)
    brain = np.zeros((6, 40, 30), bool)
    brain[2:4, 5:35, 5:25] = True
    volume[:, :, 5:35, 5:25] = 1.0
    sampler = CropSampler([volume], [brain], crop=32, seed=0)
    sampler_slices = {z for _, z in sampler.slices}
    batch = sampler.batch(5)
    assert batch.shape == (5, 2, 32, 32)
    assert sampler_slices == {2, 3}
    assert float(batch.sum()) > 0


def test_the_plain_prediction_is_zero_outside_the_brain_and_keeps_the_volume_size():
    net = build_plain_unet(1, channels=(4, 8))
    sources = np.random.default_rng(0).random((3, 1, 21, 19)).astype(np.float32)
    brain = np.zeros((3, 21, 19), bool)
    brain[:, 4:15, 3:12] = True
    out = translate_plain(net, sources, brain)
    assert out.shape == (3, 21, 19)
    assert np.all(out[~brain] == 0)


def test_every_subject_is_held_out_once_and_scored_beside_the_identity(tmp_path):
    root = write_simple_cases(tmp_path / "subjects", count=3, size=20)
    subjects = subjects_of(_config(root))
    rows = calibrate(subjects, ["MR_T1"], "MR_T2", steps=2, channels=(4, 8), crop=16, log=lambda _: None)
    assert sorted({r["case"] for r in rows}) == ["case0", "case1", "case2"]
    assert {r["method"] for r in rows} == {"plain", "identity"}
    assert all(np.isfinite(r["PSNR_whole"]) for r in rows)
    table = calibration_table(rows, "MR_T1->MR_T2", None, 2, None)
    assert "| mean ± std (3) | plain |" in table and "case2" in table


def test_the_command_writes_the_table_and_its_rows(tmp_path, monkeypatch):
    import medtrans_training.calibration as calibration

    root = write_simple_cases(tmp_path / "subjects", count=3, size=20)
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(tiny_config(root, data={"layout": "simple"})))
    monkeypatch.setattr(calibration, "CHANNELS", (4, 8))
    monkeypatch.setattr(calibration, "CROP", 16)
    out = tmp_path / "docs" / "calibration.md"
    assert main([str(config), "--steps", "2", "--out", str(out)]) == 0
    assert "MR_T1->MR_T2" in out.read_text()
    assert len(json.loads(out.with_suffix(".json").read_text())["rows"]) == 6
    # A later run reuses those rows (no training) and puts a bundle's per-subject rows beside them.
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    recorded = [{"case": "case1", "request": "MR_T1->MR_T2", "method": "model", **dict.fromkeys(METRICS, 0.5)}]
    (bundle / "metadata.json").write_text(json.dumps({"name": "brain", "metrics": {"crossval": {"rows": recorded}}}))
    monkeypatch.setattr(calibration, "calibrate", None)  # calling it would fail
    again = tmp_path / "again.md"
    args = [str(config), "--plain-rows", str(out.with_suffix(".json")), "--bundle", str(bundle), "--out", str(again)]
    assert main(args) == 0
    assert "| case1 | brain | 0.50 |" in again.read_text() and "2 steps" in again.read_text()
    with pytest.raises(ValueError, match="not MR_T2->MR_T1"):
        main([*args[:3], "--sources", "MR_T2", "--target", "MR_T1"])


def test_a_bundles_recorded_per_subject_scores_of_the_request_become_its_rows():
    scores = dict.fromkeys(METRICS, 1.0)
    recorded = [
        {"case": "a", "request": "MR_T1->MR_T2", "method": "model", **scores},
        {"case": "a", "request": "MR_T1->MR_T2", "method": "identity", **scores},
        {"case": "b", "request": "MR_T2->MR_T1", "method": "model", **scores},
        {"case": "c", "request": "MR_T1->MR_T2", "method": "model", **scores},
    ]
    metadata = {"name": "brain", "metrics": {"crossval": {"rows": recorded}}}
    rows = bundle_rows(metadata, "MR_T1->MR_T2", ["a", "b"])
    assert [(r["case"], r["method"]) for r in rows] == [("a", "brain")]
    assert bundle_rows({"name": "old", "metrics": {"crossval": {}}}, "MR_T1->MR_T2", ["a"]) == []
