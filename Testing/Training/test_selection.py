"""Pairs are chosen on validation cases and reported on other (test) cases, and a listed pair beats identity as well
as histogram matching: in ``medtrans-train export`` and in ``medtrans-train select`` on an existing bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medtrans_training.cli import main as train_main
from medtrans_training.export import export_run
from medtrans_training.report_tables import pair_table
from medtrans_training.selection import choose_pairs
from MedTransCore.bundles import save_bundle, sha256_file
from MedTransCore.errors import BundleError
from MedTransCore.modalities import normalisation_params, normalise
from MedTransCore.models.baselines import inbody_quantiles
from MedTransCore.preprocess import body_mask

from .helpers import tiny_config, write_simple_cases

MODALITIES = ["MR_T1", "MR_T2", "MR_PD"]
FILES = {"MR_T1": "t1", "MR_T2": "t2", "MR_PD": "pd"}


def scores(mae, ssim, psnr):
    return {"MAE": mae, "SSIM": ssim, "PSNR": psnr, "cases": 2}


def test_a_pair_is_listed_only_when_it_beats_every_baseline_on_mae_ssim_and_psnr():
    hm, identity = scores(0.20, 0.50, 20.0), scores(0.10, 0.70, 25.0)
    summary = {
        "MR_T1->MR_T2": {"m": scores(0.05, 0.90, 30.0), "identity": identity, "histogram-matching": hm},
        "MR_T2->MR_T1": {"m": scores(0.15, 0.60, 22.0), "identity": identity, "histogram-matching": hm},  # hm only
        "MR_T1->MR_PD": {"m": scores(0.05, 0.90, 24.0), "identity": identity, "histogram-matching": hm},  # PSNR
        "MR_PD->MR_T1": {"m": scores(0.05, 0.90, 30.0), "histogram-matching": hm},  # no identity result
        "MR_T2->MR_PD": {  # beats both, but its structure is anti-correlated with the truth's
            "m": scores(0.05, -0.10, 30.0),
            "identity": scores(0.10, -0.20, 25.0),
            "histogram-matching": scores(0.20, -0.30, 20.0),
        },
    }
    pairs = [("MR_T1", "MR_T2"), ("MR_T2", "MR_T1"), ("MR_T1", "MR_PD"), ("MR_PD", "MR_T1"), ("MR_PD", "MR_T2")]
    kept, dropped = choose_pairs(summary, "m", [*pairs, ("MR_T2", "MR_PD")])
    assert kept == [["MR_T1", "MR_T2"]]
    assert "SSIM -0.1000 is not above 0" in dropped["MR_T2->MR_PD"]
    assert "identity on MAE (0.15 vs 0.1)" in dropped["MR_T2->MR_T1"] and "histogram" not in dropped["MR_T2->MR_T1"]
    assert "identity on PSNR (24 vs 25)" in dropped["MR_T1->MR_PD"]
    assert "no identity result" in dropped["MR_PD->MR_T1"]
    assert "no validation case holds both MR_PD and MR_T2" in dropped["MR_PD->MR_T2"]


def fitted_quantiles(root, cases) -> dict[str, torch.Tensor]:
    """In-body quantiles of the training cases, normalised as inference does (a histogram matching fitted to them)."""
    found = {}
    for key, name in FILES.items():
        values = []
        for case in cases:
            image = sitk.ReadImage(str(root / case / f"{name}.nii.gz"))
            array = sitk.GetArrayFromImage(image).astype(np.float64)
            mask = sitk.GetArrayFromImage(body_mask(image, key)).astype(bool)
            values.append(normalise(array[mask], normalisation_params(array, key, mask)))
        found[key] = torch.from_numpy(inbody_quantiles(np.concatenate(values)))
    return found


@pytest.fixture
def fitted_bundle(tmp_path):
    """A histogram-matching "model" fitted to its own training cases (the shipped baseline's histograms come from
    phantoms), listing every pair as an export before the validation/test split did."""
    root = write_simple_cases(tmp_path / "data", count=5, names=tuple(FILES.values()))
    pairs = [[s, t] for s in MODALITIES for t in MODALITIES if s != t]
    metadata = {
        "name": "fitted-hm",
        "family": "histogram_matching",
        "version": "0.0.1",
        "description": "histogram matching fitted to the training cases",
        "modalities": MODALITIES,
        "pairs": pairs,
        "spacing": None,
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": {},
        "training": {"data": {"modalities": MODALITIES, "pairs": "all"}, "train_cases": ["case0", "case1"]},
        "metrics": {"held_out": {}},
        "licence": "Apache-2.0",
    }
    weights = {"histograms.safetensors": fitted_quantiles(root, ["case0", "case1"])}
    return save_bundle(tmp_path / "fitted-hm", metadata, weights), root


def select(bundle, root, validation="case2", test="case3,case4") -> int:
    """``medtrans-train select`` on the fitted bundle; returns the exit status."""
    try:
        train_main(
            ["select", str(bundle.path), "--validation", str(root), "--validation-cases", validation,
             "--test", str(root), "--test-cases", test, "--device", "cpu"]
        )  # fmt: skip
    except SystemExit as exc:
        return exc.code
    return 0


def test_select_chooses_on_validation_reports_on_test_and_keeps_the_weights(fitted_bundle, capsys):
    bundle, root = fitted_bundle
    digest = sha256_file(bundle.path / "histograms.safetensors")
    assert select(bundle, root) == 0
    meta = json.loads((bundle.path / "metadata.json").read_text())
    assert sha256_file(bundle.path / "histograms.safetensors") == digest == meta["weights"]["histograms.safetensors"]
    assert json.loads(capsys.readouterr().out)["pairs"] == meta["pairs"]
    metrics, trained = meta["metrics"], {f"{s}->{t}" for s in MODALITIES for t in MODALITIES if s != t}
    listed = {f"{s}->{t}" for s, t in meta["pairs"]}
    assert metrics["validation"]["cases"] == ["case2"] and metrics["test"]["cases"] == ["case3", "case4"]
    assert "held_out" not in metrics and "identity" in metrics["rule"]
    assert set(metrics["validation"]["summary"]) == trained and set(metrics["test"]["summary"]) == listed
    assert listed and listed | set(metrics["dropped_pairs"]) == trained and not listed & set(metrics["dropped_pairs"])
    for pair in listed:
        validation, test = metrics["validation"]["summary"][pair], metrics["test"]["summary"][pair]
        assert validation["fitted-hm"]["SSIM"] > 0
        for baseline in ("identity", "histogram-matching"):
            assert validation["fitted-hm"]["MAE"] < validation[baseline]["MAE"]
            assert validation["fitted-hm"]["SSIM"] > validation[baseline]["SSIM"]
            assert validation["fitted-hm"]["PSNR"] > validation[baseline]["PSNR"]
        assert set(test) == {"fitted-hm", "identity", "histogram-matching"} and test["fitted-hm"]["cases"] == 2
        assert test["fitted-hm"]["MAE"] != validation["fitted-hm"]["MAE"]  # other cases, other numbers
    # On PD -> T2 the fitted mapping loses to the source as is (identity) on PSNR: the identity rule at work.
    assert "MR_PD->MR_T2" in metrics["dropped_pairs"]
    assert metrics["dropped_pairs"]["MR_PD->MR_T2"].startswith("validation (1 case): does not beat identity on ")
    assert meta["training"]["selection_command"].startswith("medtrans-train select ")
    table = pair_table(meta).splitlines()
    assert len(table) == 2 + len(trained) and sum("| yes |" in row for row in table) == len(listed)


def test_a_pair_that_no_test_case_holds_is_not_listed(fitted_bundle):
    bundle, root = fitted_bundle
    for case in ("case3", "case4"):
        (root / case / "pd.nii.gz").unlink()
    assert select(bundle, root) == 0
    meta = json.loads((bundle.path / "metadata.json").read_text())
    assert not any("MR_PD" in pair for pair in meta["pairs"]) and meta["pairs"]
    reason = meta["metrics"]["dropped_pairs"]["MR_T1->MR_PD"]
    assert reason.startswith("no test case holds both MR_T1 and MR_PD, so it cannot be reported (validation: ")


@pytest.mark.parametrize(
    "cases, words",
    [
        ({"test": "case0,case3"}, "case0 cannot be both training and test cases"),
        ({"validation": "case3", "test": "case3"}, "case3 cannot be both validation and test cases"),
        ({"test": "case9"}, "has no case case9"),
    ],
)
def test_select_refuses_test_cases_that_training_or_the_choice_has_seen(fitted_bundle, capsys, cases, words):
    bundle, root = fitted_bundle
    before = (bundle.path / "metadata.json").read_text()
    assert select(bundle, root, cases.get("validation", "case2"), cases["test"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert (bundle.path / "metadata.json").read_text() == before


def test_export_chooses_on_the_validation_split_and_reports_the_test_split_of_the_config(tmp_path):
    root = write_simple_cases(tmp_path / "data", count=4)
    config = tiny_config(root, data={"test_cases": ["case3"]}, train={"steps": 1})
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    run = tmp_path / "run"
    train_main(["train", str(tmp_path / "tiny.json"), "--run-dir", str(run), "--device", "cpu"])
    meta = export_run(run, tmp_path / "bundle", keep_all_pairs=True, device="cpu").metadata
    metrics, training = meta["metrics"], meta["training"]
    assert metrics["validation"]["cases"] == ["case2"] and metrics["test"]["cases"] == ["case3"]
    assert training["train_cases"] == ["case0", "case1"] and training["target_steps"] == 1
    assert set(metrics["test"]["summary"]["MR_T1->MR_T2"]) == {"tiny-unet", "identity", "histogram-matching"}
    assert set(metrics["listed_despite_the_rule"]) | {f"{s}->{t}" for s, t in meta["pairs"]} >= {"MR_T1->MR_T2"}

    config["data"].pop("test_cases")
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match="no test case"):
        export_run(run, tmp_path / "bundle2", device="cpu")
