"""Which pairs a bundle lists, and which numbers it reports: chosen on validation cases, reported on test cases.

A trained pair is listed when, on the *validation* cases, the model's mean MAE is lower and its mean SSIM and PSNR
are higher than those of every baseline (``identity``: the source as is; ``histogram-matching``), and its mean SSIM
is positive (below 0 the output's structure runs against the truth's, however bad the baselines). The listed pairs
are then scored on *test* cases, used neither for training nor for this choice, and those test numbers (with the
baselines' on the same cases) are what a bundle reports. A pair that no test case holds cannot be reported, so it is
not listed either. Every dropped pair is recorded with its reason and validation numbers.

Two entry points share this rule: ``medtrans-train export`` (validation and test cases from the run config) and
``medtrans-train select`` (:func:`reselect_bundle`: an existing bundle folder, cases named on the command line).
Every score comes from ``medtrans_training.evaluate`` (``translate_image`` on the whole source, as users run it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MedTransCore.bundles import Bundle, load_bundle
from MedTransCore.errors import BundleError, InputError

from .data import resolve_pairs
from .evaluate import BASELINES, CaseSource, evaluate_cases, json_safe, summarise

#: ``(metric, better)``: the listed pairs beat every baseline on all three, on the validation cases.
RULE = (("MAE", "lower"), ("SSIM", "higher"), ("PSNR", "higher"))
#: The listed pairs' validation SSIM must be above this, whatever the baselines score.
MIN_SSIM = 0.0
#: Relative difference below which two means are a tie, not a win (float rounding: a model that reproduces the
#: source exactly must not "beat" identity by 1e-12).
TIE = 1e-6
RULE_TEXT = (
    "listed = every trained pair whose mean MAE is lower and mean SSIM and PSNR are higher than those of each "
    "baseline (identity, histogram-matching) on the validation cases, whose mean validation SSIM is above 0, and that "
    "a test case holds; the reported numbers are the test cases' (never used for training or for this choice)"
)
DEFINITION = "MedTransCore.metrics.compute_metrics of translate_image outputs, mean over cases"


@dataclass
class Selection:
    """The outcome of :func:`select_pairs`.

    Attributes:
        pairs: the listed pairs, ``[source, target]`` in training order.
        dropped: ``{"S->T": reason}`` for every other trained pair.
        metrics: the bundle's ``metrics`` field (rule, validation summary of every pair, test summary of the listed).
    """

    pairs: list[list[str]]
    dropped: dict[str, str]
    metrics: dict[str, Any]


def beats(ours: float | None, theirs: float | None, better: str) -> bool:
    """Whether ``ours`` is better than ``theirs`` by more than a :data:`TIE` (``better``: ``lower`` or ``higher``)."""
    if ours is None or theirs is None or not (math.isfinite(ours) and math.isfinite(theirs)):
        return False
    margin = TIE * max(abs(ours), abs(theirs), 1e-12)
    return ours < theirs - margin if better == "lower" else ours > theirs + margin


def choose_pairs(
    summary: dict[str, dict[str, dict[str, float]]],
    model: str,
    pairs: list[tuple[str, str]] | list[list[str]],
    baselines: tuple[str, ...] = BASELINES,
) -> tuple[list[list[str]], dict[str, str]]:
    """Apply :data:`RULE` to validation means.

    Args:
        summary: ``medtrans_training.evaluate.summarise`` of the validation rows.
        model: the model's method name in ``summary``.
        pairs: every trained pair, in the order to keep.
        baselines: the methods to beat (all of them).

    Returns:
        ``(kept pairs as [source, target], {dropped "S->T": reason with the validation numbers})``.
    """
    kept, dropped = [], {}
    for source, target in pairs:
        name = f"{source}->{target}"
        methods = summary.get(name, {})
        if model not in methods:
            dropped[name] = f"no validation case holds both {source} and {target}"
            continue
        missing = [b for b in baselines if b not in methods]
        if missing:
            dropped[name] = f"no {', '.join(missing)} result on the validation cases to compare with"
            continue
        ours, losses = methods[model], []
        for baseline in baselines:
            for metric, better in RULE:
                a, b = ours[metric], methods[baseline][metric]
                if not beats(a, b, better):
                    losses.append(f"{baseline} on {metric} ({a:.4g} vs {b:.4g})")
        count = ours.get("cases", 0)
        cases = f"validation ({count} case{'' if count == 1 else 's'}): "
        if losses:
            dropped[name] = (
                cases + "does not beat " + "; ".join(losses) + "; "
                "the rule needs lower MAE and higher SSIM and PSNR than each baseline"
            )
        elif not beats(ours["SSIM"], MIN_SSIM, "higher"):
            dropped[name] = (
                cases + f"beats every baseline, but its SSIM {ours['SSIM']:.4f} is not above {MIN_SSIM:g}: its "
                "structure runs against the truth's"
            )
        else:
            kept.append([source, target])
    return kept, dropped


def trained_pairs(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    """Every pair a bundle's network was trained on (``training.data.pairs`` over its modalities)."""
    data = metadata.get("training", {}).get("data")
    if not isinstance(data, dict) or "modalities" not in data:
        return [tuple(p) for p in metadata["pairs"]]
    return resolve_pairs(list(data["modalities"]), data.get("pairs", "all"))


def training_cases(metadata: dict[str, Any]) -> list[str] | None:
    """Case ids the bundle was trained on: ``training.train_cases``, else derived from phantom seeds, else None."""
    training = metadata.get("training", {})
    if isinstance(training.get("train_cases"), list):
        return list(training["train_cases"])
    data = training.get("data", {})
    if isinstance(data, dict) and data.get("source", "phantom") == "phantom" and "modalities" in data:
        from .data import case_loaders

        return [case for case, _ in case_loaders(data, "train")]
    return None


def check_disjoint(splits: dict[str, list[str]]) -> None:
    """Refuse a case that is in two of ``{"training": [...], "validation": [...], "test": [...]}``.

    Raises:
        InputError: naming the cases and the two splits.
    """
    names = list(splits)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            both = sorted(set(splits[first]) & set(splits[second]))
            if both:
                raise InputError(
                    f"{', '.join(both)} cannot be both {first} and {second} cases: pairs are chosen on validation "
                    "cases and reported on test cases that neither training nor the choice has seen"
                )


def select_pairs(
    bundle: Bundle,
    pairs: list[tuple[str, str]],
    validation: CaseSource,
    test: CaseSource,
    *,
    validation_data: str,
    test_data: str,
    train_cases: list[str] | None = None,
    keep_all_pairs: bool = False,
    allow_empty: bool = False,
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> Selection:
    """Choose the pairs on ``validation`` and score them on ``test``.

    Args:
        bundle: a bundle that supports every pair in ``pairs`` (see :func:`bundle_with_pairs`).
        pairs: the trained pairs to choose from.
        validation: ``(case id, loader)`` of the validation cases.
        test: ``(case id, loader)`` of the test cases.
        validation_data: where the validation cases come from (recorded, e.g. ``phantom:head:1000-1003``).
        test_data: where the test cases come from (recorded).
        train_cases: the training case ids, when known (must not be validation or test cases).
        keep_all_pairs: list every trained pair that a test case holds, whatever the validation numbers
            (the rule's verdicts are still recorded).
        allow_empty: return a selection without pairs instead of raising when none qualifies.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: called with a line of text per translation.

    Raises:
        BundleError: no validation or test case, or no pair left to list (unless ``allow_empty``).
        InputError: a case in two splits.
    """
    validation, test = list(validation), list(test)
    if not validation:
        raise BundleError("no validation case: pairs are chosen on validation cases (data.val_cases or val_seeds)")
    if not test:
        raise BundleError(
            "no test case: the reported numbers come from test cases used neither for training nor for choosing "
            "the pairs (data.test_cases, data.test_fraction or data.phantom.test_seeds)"
        )
    splits = {"validation": [c for c, _ in validation], "test": [c for c, _ in test]}
    check_disjoint({"training": train_cases or [], **splits})
    val_summary = summarise(evaluate_cases(bundle, validation, pairs=pairs, device=device, progress=progress))
    kept, dropped = choose_pairs(val_summary, bundle.name, pairs)
    if keep_all_pairs:
        kept = [list(p) for p in pairs]
    test_rows = evaluate_cases(bundle, test, pairs=[tuple(p) for p in kept], device=device, progress=progress)
    test_summary = summarise(test_rows)
    listed = []
    for source, target in kept:
        if bundle.name in test_summary.get(f"{source}->{target}", {}):
            listed.append([source, target])
        else:
            dropped[f"{source}->{target}"] = (
                f"no test case holds both {source} and {target}, so it cannot be reported (validation: "
                + ("beat every baseline" if f"{source}->{target}" not in dropped else dropped[f"{source}->{target}"])
                + ")"
            )
    if not listed and not allow_empty:
        raise BundleError(
            "no pair can be listed: none beat every baseline on the validation cases with a test case to report it "
            "on (train longer, or pass --keep-all-pairs); " + "; ".join(f"{p}: {r}" for p, r in dropped.items())
        )
    metrics = {
        "rule": RULE_TEXT,
        "baselines": list(BASELINES),
        "definition": DEFINITION,
        "validation": {"data": validation_data, "cases": splits["validation"], "summary": json_safe(val_summary)},
        "test": {
            "data": test_data,
            "cases": splits["test"],
            "summary": json_safe(test_summary),
            "per_case": per_case(test_rows, listed),
        },
        "dropped_pairs": {p: r for p, r in dropped.items() if p.split("->") not in listed},
    }
    sampler = bundle.metadata.get("sampler") or {}
    if sampler.get("scheduler"):  # the numbers hold for this sampler and step count (translate_image's defaults)
        metrics["sampler"] = {"scheduler": sampler["scheduler"], "steps": sampler.get("default_steps")}
    if keep_all_pairs:
        metrics["listed_despite_the_rule"] = {p: r for p, r in dropped.items() if p.split("->") in listed}
    return Selection(pairs=listed, dropped=metrics["dropped_pairs"], metrics=metrics)


def per_case(rows: list[dict[str, Any]], pairs: list[list[str]]) -> dict[str, dict[str, dict[str, dict]]]:
    """``{"S->T": {method: {case: {MAE, SSIM, PSNR}}}}`` of ``pairs``: what a check can re-score case by case."""
    keep = {f"{s}->{t}" for s, t in pairs}
    table: dict[str, dict[str, dict[str, dict]]] = {}
    for row in rows:
        pair = f"{row['source']}->{row['target']}"
        if pair in keep:
            scores = {metric: row[metric] for metric, _ in RULE}
            table.setdefault(pair, {}).setdefault(row["method"], {})[row["case"]] = json_safe(scores)
    return table


@contextmanager
def bundle_with_pairs(bundle: Bundle, pairs: list[tuple[str, str]]) -> Iterator[Bundle]:
    """A temporary copy of ``bundle`` that lists ``pairs`` (same weights, same hashes), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix=".medtrans-select-"))
    try:
        copy = folder / bundle.path.name
        shutil.copytree(bundle.path, copy)
        metadata = {**bundle.metadata, "pairs": [list(p) for p in pairs]}
        (copy / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        yield load_bundle(copy)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def reselect_bundle(
    bundle_dir: str | Path,
    validation: CaseSource,
    test: CaseSource,
    *,
    validation_data: str,
    test_data: str,
    command: str,
    allow_empty: bool = False,
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
) -> Bundle:
    """Re-run the choice on an existing bundle folder and rewrite its ``metadata.json`` (weights untouched).

    Every trained pair (``training.data`` of its metadata) is scored on both splits; ``pairs``, ``metrics`` and
    ``training.selection_command`` are replaced, the older per-pair fields (``metrics.held_out``,
    ``training.dropped_pairs``) removed.

    Args:
        bundle_dir: the bundle folder (rewritten in place, atomically).
        validation: ``(case id, loader)`` of the validation cases.
        test: ``(case id, loader)`` of the test cases.
        validation_data: where the validation cases come from (recorded).
        test_data: where the test cases come from (recorded).
        command: the command line (recorded).
        allow_empty: rewrite the metadata even when no pair qualifies (the bundle then lists none).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: called with a line of text per translation.
    """
    bundle = load_bundle(bundle_dir)
    pairs = trained_pairs(bundle.metadata)
    train_cases = training_cases(bundle.metadata)
    if train_cases is None and progress is not None:
        progress("warning: the bundle does not record its training cases (training.train_cases); cannot check them")
    with bundle_with_pairs(bundle, pairs) as everything:
        selection = select_pairs(
            everything,
            pairs,
            validation,
            test,
            validation_data=validation_data,
            test_data=test_data,
            train_cases=train_cases,
            allow_empty=allow_empty,
            device=device,
            progress=progress,
        )
    path = Path(bundle_dir) / "metadata.json"
    # Re-read: the evaluation takes minutes, and only these three fields are this function's to change.
    metadata = json.loads(path.read_text(encoding="utf-8"))
    training = {k: v for k, v in metadata["training"].items() if k not in ("dropped_pairs", OLD_DROPPED)}
    metadata.update(
        pairs=selection.pairs, metrics=selection.metrics, training={**training, "selection_command": command}
    )
    tmp = path.with_name(f".metadata.json.{os.getpid()}")
    tmp.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return load_bundle(bundle_dir)


#: Older exports kept a second copy of the dropped pairs under this name.
OLD_DROPPED = "pairs_not_beating_histogram_matching"
