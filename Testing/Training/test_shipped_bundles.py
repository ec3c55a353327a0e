"""The shipped trained bundles: they load, and re-evaluating them on their recorded held-out cases reproduces the
metrics stored in their metadata (the numbers the README quotes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtrans_training.data import case_loaders
from medtrans_training.evaluate import evaluate_cases, summarise
from MedTransCore.bundles import SHIPPED_DIR, load_bundle

TRAINED = sorted(
    path.name
    for path in SHIPPED_DIR.iterdir()
    if (path / "metadata.json").is_file() and load_bundle(path).family not in ("identity", "histogram_matching")
)


def test_every_trained_family_ships_a_bundle():
    assert {load_bundle(SHIPPED_DIR / name).family for name in TRAINED} == {"unet", "aldm"}


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_evaluating_a_shipped_bundle_on_its_held_out_cases_reproduces_its_stored_metrics(name):
    bundle = load_bundle(SHIPPED_DIR / name)
    data = bundle.metadata["training"]["data"]
    if data.get("source") == "folder" and not Path(data["root"]).is_dir():
        pytest.skip(f"its held-out data {data['root']} is not on this machine")
    pair = tuple(bundle.pairs[0])
    cases = case_loaders(data, "val")
    assert [case for case, _ in cases] == bundle.metadata["metrics"]["cases"]
    rows = evaluate_cases(bundle, cases, baselines=(), pairs=[pair], device="cpu")
    measured = summarise(rows)["->".join(pair)][bundle.name]
    stored = bundle.metadata["metrics"]["held_out"]["->".join(pair)][bundle.name]
    for metric in ("MAE", "SSIM", "PSNR"):
        assert measured[metric] == pytest.approx(stored[metric], rel=1e-3, abs=1e-4), metric
