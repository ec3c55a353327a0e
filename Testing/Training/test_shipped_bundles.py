"""The shipped trained bundles: what their metadata records is consistent (every listed pair beat both baselines on
the validation cases, the test cases are new), and re-scoring every listed pair and both baselines on the recorded test
cases reproduces the stored test numbers (the numbers the README quotes)."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import pytest

from medtrans_training.data import case_loaders, cases_from_spec
from medtrans_training.evaluate import BASELINES, evaluate_cases
from medtrans_training.selection import MIN_SSIM, RULE, beats, trained_pairs, training_cases
from MedTransCore.bundles import SHIPPED_DIR, Bundle, load_bundle
from MedTransCore.phantoms import generate_phantom

TRAINED = sorted(
    path.name
    for path in SHIPPED_DIR.iterdir()
    if (path / "metadata.json").is_file() and load_bundle(path).family not in ("identity", "histogram_matching")
)
# Bundles whose listing was chosen on validation cases and reported on test cases (the others: cross-validation).
SPLIT_SELECTED = [name for name in TRAINED if "test" in load_bundle(SHIPPED_DIR / name).metadata["metrics"]]
CROSS_VALIDATED = [name for name in TRAINED if "crossval" in load_bundle(SHIPPED_DIR / name).metadata["metrics"]]
PHANTOM_PREFIX = "phantom:"
RUN_CONFIG_SPLIT = "the run config's test split"
#: Recorded test specs are paths relative to the repository root (where `medtrans-train select` ran).
REPO_ROOT = SHIPPED_DIR.parents[2]


# Families whose code exists but whose first model is still to be trained (say why; remove once one ships).
NOT_SHIPPED_YET: dict[str, str] = {}


def test_every_trained_family_ships_a_bundle():
    from MedTransCore.models.registry import FAMILY_NAMES

    trained_families = set(FAMILY_NAMES) - {"identity", "histogram_matching"} - set(NOT_SHIPPED_YET)
    assert {load_bundle(SHIPPED_DIR / name).family for name in TRAINED} == trained_families


@pytest.mark.parametrize("name", SPLIT_SELECTED)
def test_every_listed_pair_beat_both_baselines_on_validation_and_is_reported_on_new_cases(name):
    meta = load_bundle(SHIPPED_DIR / name).metadata
    metrics = meta["metrics"]
    validation, test = metrics["validation"], metrics["test"]
    listed = {f"{s}->{t}" for s, t in meta["pairs"]}
    trained = {f"{s}->{t}" for s, t in trained_pairs(meta)}
    assert listed <= trained and listed | set(metrics["dropped_pairs"]) == trained
    assert not listed & set(metrics["dropped_pairs"])
    for pair in listed:
        methods = validation["summary"][pair]
        assert methods[name]["SSIM"] > MIN_SSIM, pair
        for baseline in BASELINES:
            for metric, better in RULE:
                assert beats(methods[name][metric], methods[baseline][metric], better), (pair, baseline, metric)
    assert set(test["summary"]) == listed
    assert all(set(test["summary"][pair]) == {name, *BASELINES} for pair in listed)
    trained_on = training_cases(meta)
    assert trained_on, "the training cases must be known to prove the test cases are new"
    for first, second in [(trained_on, validation["cases"]), (trained_on, test["cases"])]:
        assert not set(first) & set(second)
    assert not set(validation["cases"]) & set(test["cases"])


@pytest.mark.parametrize("name", TRAINED)
def test_every_training_run_says_which_step_it_reached(name):
    meta = load_bundle(SHIPPED_DIR / name).metadata
    stages = [meta["training"], *meta.get("stages", {}).values()]
    for stage in stages:
        runs = stage["runs"]
        assert [run["command"] for run in runs] == stage["commands"]
        for run in runs:
            assert run["status"] in ("finished", "stopped", "interrupted", "not recorded")
            assert isinstance(run["step_reached"], int) or run["step_reached"] == "not recorded"
        assert runs[-1]["step_reached"] == stage["steps"]


@functools.cache
def phantom_images(anatomy: str, seed: int, spacing: tuple[float, ...]) -> dict:
    """One phantom per seed (all modalities; a subset gives the same arrays), shared by every bundle and pair."""
    return generate_phantom(anatomy=anatomy, seed=seed, shape=(64, 64, 64), spacing=spacing).images


def recorded_test_cases(bundle: Bundle) -> dict:
    """``{case id: loader}`` of the recorded test cases, rebuilt as ``medtrans-train select`` built them."""
    test, meta = bundle.metadata["metrics"]["test"], bundle.metadata
    spec = test["data"]
    if spec.startswith(RUN_CONFIG_SPLIT):  # exported from a run: its own data config names the test cases
        data = meta["training"]["data"]
        if "root" in data and not Path(data["root"]).is_dir():
            pytest.skip(f"its test data {data['root']} is not on this machine")
        loaders = dict(case_loaders(data, "test"))
        assert set(test["cases"]) <= set(loaders)
        return {case: loaders[case] for case in test["cases"]}
    if not spec.startswith(PHANTOM_PREFIX):  # a data folder, a manifest or a run config (`select --test CONFIG`)
        path = Path(spec) if Path(spec).is_absolute() else REPO_ROOT / spec
        if not path.exists():
            pytest.skip(f"its test data {spec} is not on this machine")
        return dict(cases_from_spec(str(path), meta["modalities"], meta["spacing"], split="test", cases=test["cases"]))
    anatomy = spec.split(":")[1]
    reference = cases_from_spec(spec, meta["modalities"], meta["spacing"])  # the ids select used
    assert [case for case, _ in reference] == test["cases"]

    def loader(seed: int):
        return lambda: (
            {key: phantom_images(anatomy, seed, tuple(meta["spacing"]))[key] for key in meta["modalities"]},
            None,
        )

    return {case: loader(int(case.rsplit("-", 1)[1])) for case in test["cases"]}


@pytest.mark.parametrize("name", SPLIT_SELECTED)
def test_the_stored_test_means_are_the_means_of_the_stored_test_cases(name):
    test = load_bundle(SHIPPED_DIR / name).metadata["metrics"]["test"]
    assert set(test["per_case"]) == set(test["summary"])
    for pair, methods in test["summary"].items():
        for method, values in methods.items():
            cases = test["per_case"][pair][method]
            assert len(cases) == values["cases"] and set(cases) <= set(test["cases"])
            for metric in ("MAE", "SSIM", "PSNR"):
                mean = sum(case[metric] for case in cases.values()) / len(cases)
                assert mean == pytest.approx(values[metric], rel=1e-6), (pair, method, metric)


#: Rows shared across bundles scored on the same phantoms (each baseline translates each case and pair once).
ROWS: dict = {}
#: MEDTRANS_CHECK_ALL_TEST_CASES=1 re-scores every recorded test case of every pair (minutes more on a CPU).
ALL_CASES = os.environ.get("MEDTRANS_CHECK_ALL_TEST_CASES") == "1"


@pytest.mark.slow
@pytest.mark.parametrize("name", SPLIT_SELECTED)
def test_rescoring_every_listed_pair_and_both_baselines_on_recorded_test_cases_reproduces_the_stored_scores(name):
    """Every listed pair with the model and both baselines, on one recorded test case per pair (rotating, so every
    case is used; all of them with MEDTRANS_CHECK_ALL_TEST_CASES=1), against the stored per-case scores."""
    bundle = load_bundle(SHIPPED_DIR / name)
    sampler = bundle.metadata.get("sampler") or {}
    if sampler.get("scheduler"):
        recorded = bundle.metadata["metrics"]["sampler"]
        assert recorded == {"scheduler": sampler["scheduler"], "steps": sampler.get("default_steps")}, (
            "the default sampler changed since the numbers were measured: run medtrans-train select again"
        )
    loaders, per_case = recorded_test_cases(bundle), bundle.metadata["metrics"]["test"]["per_case"]
    started, checked = time.perf_counter(), 0
    cache = ROWS if bundle.metadata["spacing"] == [3.0] * 3 else None
    for index, (source, target) in enumerate(bundle.pairs):
        stored = per_case[f"{source}->{target}"]
        holding = sorted(stored[name])
        chosen = holding if ALL_CASES else [holding[index % len(holding)]]
        rows = evaluate_cases(
            bundle, [(case, loaders[case]) for case in chosen], pairs=[(source, target)], device="cpu", cache=cache
        )
        assert {(row["case"], row["method"]) for row in rows} == {(c, m) for c in chosen for m in (name, *BASELINES)}
        for row in rows:
            expected = stored[row["method"]][row["case"]]
            for metric in ("MAE", "SSIM", "PSNR"):
                assert row[metric] == pytest.approx(expected[metric], rel=1e-3, abs=1e-4), (
                    f"{source}->{target}",
                    row["case"],
                    row["method"],
                    metric,
                )
            checked += 1
    print(f"{name}: {checked} scores in {time.perf_counter() - started:.1f} s")


@pytest.mark.parametrize("name", CROSS_VALIDATED)
def test_a_cross_validated_bundle_lists_only_requests_that_beat_both_baselines_on_held_out_subjects(name):
    meta = load_bundle(SHIPPED_DIR / name).metadata
    crossval = meta["metrics"]["crossval"]
    listed = [f"{s}->{t}" for s, t in meta["pairs"]]
    listed += [f"{'+'.join(entry['sources'])}->{entry['target']}" for entry in meta.get("source_sets", [])]
    assert listed
    for key, entry in crossval["requests"].items():
        assert (key in listed) == entry["listed"], key
        if entry["listed"]:
            assert len(entry["subjects"]) >= 2 and not entry["not_listed_because"]
            assert not set(entry["subjects"]) & set(crossval["not_held_out"])
            model, others = entry["methods"]["model"], [entry["methods"][m] for m in ("identity", "histogram_matching")]
            for other in others:  # every subject beat both, so the means do too
                assert model["MAE_brain"]["mean"] < other["MAE_brain"]["mean"]
                assert model["PSNR_brain"]["mean"] > other["PSNR_brain"]["mean"]
                assert model["SSIM_brain"]["mean"] > other["SSIM_brain"]["mean"]
