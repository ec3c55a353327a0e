"""Leave-one-subject-out cross-validation of a training config on real subjects (``medtrans-train crossval``).

For each subject of the config's data: train the config on every other subject (run folder ``OUT/fold-<case>``),
translate the held-out subject with that fold's model through the inference pipeline users run
(:func:`MedTransCore.translate.translate_image`), and score it beside identity and histogram matching, whose
reference quantiles come from that fold's training subjects. The requests scored on a subject are every ordered
pair of the sequences it has and, when it has three or more, every "all the others -> one" set.

A multi-stage family (``aldm``, ``vae_transformer``) is cross-validated as a pipeline
(:mod:`medtrans_training.recipe`): each fold trains every stage, in ``OUT/fold-<case>/<stage>``.

The model trained on every subject (``OUT/all``, the same recipe) becomes the bundle. It lists a request only
when, on every held-out subject that has it (at least :data:`MIN_SUBJECTS`), the fold model beats both baselines in
the brain on MAE, PSNR and SSIM (:data:`LISTING_METRICS`). Runs, scores and figure slices are kept per fold, so an
interrupted cross-validation resumes where it stopped; ``--folds`` runs a subset (e.g. in two processes at once).
Metrics: :func:`MedTransCore.metrics.brain_mr_metrics`.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from MedTransCore.bundles import Bundle, save_bundle
from MedTransCore.errors import InputError
from MedTransCore.metrics import brain_mr_metrics, brain_mr_scale
from MedTransCore.modalities import MR_SCHEMES, normalisation_params, normalise_with_scheme
from MedTransCore.models.baselines import match_quantiles, volume_quantiles
from MedTransCore.models.slice_unet import OUTPUT_QUANTILES_FILE

from .data import case_loaders
from .export import bundle_metadata, load_run, run_bundle_parts
from .recipe import Recipe, single_stage
from .stages.base import CHECKPOINT_NAME
from .trainer import CONFIG_NAME, Trainer

SPLIT_KEYS = ("val_cases", "test_cases", "val_fraction", "test_fraction")
#: ``(metric, better)``: a listed request beats both baselines on each of these on every held-out subject.
LISTING_METRICS = (("MAE_brain", "lower"), ("PSNR_brain", "higher"), ("SSIM_brain", "higher"))
METRICS = ("PSNR_whole", "SSIM_whole", "MAE_whole", "PSNR_brain", "SSIM_brain", "MAE_brain")
METHODS = ("model", "identity", "histogram_matching")
#: A request is listed only when at least this many held-out subjects have it.
MIN_SUBJECTS = 2
SCORES_NAME, SLICES_NAME = "scores.json", "slices.npz"


@dataclass(frozen=True)
class Request:
    """One translation scored on a held-out subject: ``sources`` (first = reference grid) -> ``target``."""

    sources: tuple[str, ...]
    target: str

    @property
    def key(self) -> str:
        return f"{'+'.join(self.sources)}->{self.target}"


@dataclass
class Subject:
    """A real subject: its sequences' files and its brain mask file (if the layout has one)."""

    case: str
    files: dict[str, Path]
    mask: Path | None

    def images(self) -> dict[str, sitk.Image]:
        from MedTransCore.io import read_image

        return {key: read_image(path)[0] for key, path in self.files.items()}

    def brain(self, images: dict[str, sitk.Image]) -> np.ndarray:
        """The brain mask on the first sequence's grid: the mask file, else every sequence's non-zero voxels."""
        first = next(iter(images.values()))
        if self.mask is not None:
            from MedTransCore.io import read_mask

            mask = read_mask(self.mask)
            return sitk.GetArrayFromImage(mask) > 0
        union = np.zeros(sitk.GetArrayViewFromImage(first).shape, dtype=bool)
        for image in images.values():
            union |= sitk.GetArrayViewFromImage(image) != 0
        return union


def subjects_of(config: dict[str, Any]) -> list[Subject]:
    """Every case of the config's data (splits ignored), with the sequences of ``data.modalities`` it has."""
    data = strip_splits(config)["data"]
    modalities = list(data["modalities"])
    subjects = []
    for case, loader in case_loaders(data, "train"):
        record = loader.record
        files = {key: Path(record.images[key]) for key in modalities if key in record.images}
        subjects.append(Subject(case, files, Path(record.mask) if record.mask else None))
    if len(subjects) < 3:
        raise InputError(f"cross-validation needs at least 3 subjects; the config's data has {len(subjects)}")
    return subjects


def requests_of(subject: Subject) -> list[Request]:
    """Every ordered pair of the subject's sequences, and every "all the others -> one" set when it has 3+."""
    keys = list(subject.files)
    pairs = [Request((s,), t) for s in keys for t in keys if s != t]
    sets = [Request(tuple(k for k in keys if k != t), t) for t in keys] if len(keys) >= 3 else []
    return pairs + sets


def best_per_metric(candidates: list[dict[str, float]]) -> dict[str, float]:
    """The best of several sources' scores on each of :data:`METRICS` (lowest MAE, highest PSNR and SSIM)."""
    return {metric: (min if metric.startswith("MAE") else max)(c[metric] for c in candidates) for metric in METRICS}


def strip_splits(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of the config without validation/test splits (every case trains)."""
    config = copy.deepcopy(config)
    for key in SPLIT_KEYS:
        config["data"].pop(key, None)
    return config


def fold_config(config: dict[str, Any], held_out: str | None) -> dict[str, Any]:
    """The config of one fold: ``held_out`` is its only test case (``None``: the final run on every subject)."""
    config = strip_splits(config)
    if held_out is not None:
        config["data"]["test_cases"] = [held_out]
    return config


def train_recipe(
    recipe: Recipe, folder: Path, held_out: str | None, *, device: str, log: Callable[[str], None]
) -> Path:
    """Train every stage of ``recipe`` for one fold (``held_out``; ``None``: every subject) into ``folder``.

    Returns:
        the run folder of the last stage (the model).
    """
    runs = recipe.fold_configs(folder, lambda config: fold_config(config, held_out))
    for config, run_dir in runs:
        train_fold(config, run_dir, device=device, log=log)
    return runs[-1][1]


def train_fold(config: dict[str, Any], run_dir: Path, *, device: str, log: Callable[[str], None]) -> None:
    """Train ``config`` into ``run_dir``: skipped when finished, resumed when interrupted.

    Raises:
        InputError: ``run_dir`` holds a run of another recipe (data, model or train sections differ).
    """
    steps = int(config["train"]["steps"])
    if config["train"].get("stop_at") is not None:  # the same learning-rate curve, stopped early
        steps = min(steps, int(config["train"]["stop_at"]))
    checkpoint = run_dir / CHECKPOINT_NAME
    if checkpoint.is_file():
        saved = json.loads((run_dir / CONFIG_NAME).read_text())
        for section in ("stage", "data", "model", "train"):
            if _comparable(saved, section) != _comparable(config, section):
                raise InputError(f"{run_dir} holds a run of another recipe ({section} differs); use a new --out")
        step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
        if step >= steps:
            log(f"{run_dir.name}: trained ({step} steps)")
            return
        log(f"{run_dir.name}: resuming at step {step} of {steps}")
    else:
        log(f"{run_dir.name}: training {steps} steps")
    command = f"medtrans-train crossval (fold run {run_dir.name})"
    Trainer(config, run_dir, resume=checkpoint.is_file(), device=device, command=command).fit()


def _comparable(config: dict[str, Any], section: str) -> Any:
    value = config.get(section)
    if section == "data":
        value = {k: v for k, v in (value or {}).items() if k not in SPLIT_KEYS}
    if section == "train":  # how a run was stopped is not part of the recipe
        value = {k: v for k, v in (value or {}).items() if k != "stop_at"}
    return value


def run_bundle(
    run_dir: Path,
    out: Path,
    metadata: dict[str, Any],
    export: dict[str, Any] | None = None,
    extra_weights: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Bundle:
    """Save the run's (EMA) weights as a bundle with ``metadata`` completed by the stage's own fields.

    ``export`` (name, description, licence, limitations, domain) defaults to the run's own config's section; the
    cross-validation passes its config's, which may have been completed after the run was trained.
    """
    config, _, checkpoint = load_run(run_dir)
    weights, fields, family = run_bundle_parts(config, checkpoint)
    export = export if export is not None else config.get("export", {})
    full = {**bundle_metadata(config, fields, family, name=export.get("name") or out.name, export=export), **metadata}
    return save_bundle(out, full, {**weights, **(extra_weights or {})})


def every_request_metadata(subjects: list[Subject]) -> dict[str, Any]:
    """``pairs`` and ``source_sets`` of every request any subject has (a fold model is scored on all of them)."""
    requests = {r.key: r for s in subjects for r in requests_of(s)}.values()
    return {
        "pairs": sorted([list(r.sources) + [r.target] for r in requests if len(r.sources) == 1]),
        "source_sets": sorted(
            ({"sources": list(r.sources), "target": r.target} for r in requests if len(r.sources) > 1),
            key=lambda item: (item["target"], item["sources"]),
        ),
    }


class ReferenceQuantiles:
    """In-brain quantiles of each subject's normalised sequences, cached: the histogram-matching baseline's
    references, and a ``slice_unet`` bundle's output quantiles (:data:`OUTPUT_QUANTILES_FILE`).

    Args:
        scheme: the MR normalisation of the config's data (``data.normalisation``).
    """

    def __init__(self, scheme: str = MR_SCHEMES[0]) -> None:
        self.scheme = scheme
        self._cache: dict[tuple[str, str], np.ndarray] = {}

    def of(self, subject: Subject, key: str, images: dict[str, sitk.Image] | None = None) -> np.ndarray:
        if (subject.case, key) not in self._cache:
            images = images if images is not None else subject.images()
            brain = subject.brain(images)
            normalised = normalised_array(images[key], key, brain, self.scheme)
            self._cache[subject.case, key] = volume_quantiles(normalised, brain)
        return self._cache[subject.case, key]

    def reference(self, subjects: list[Subject], key: str) -> np.ndarray:
        """Mean quantiles of ``key`` over the subjects that have it (the fold's training subjects)."""
        quantiles = [self.of(s, key) for s in subjects if key in s.files]
        if not quantiles:
            raise InputError(f"no training subject of this fold has {key}: no histogram-matching reference")
        return np.mean(quantiles, axis=0)

    def weights(self, subjects: list[Subject], modalities: list[str]) -> dict[str, dict[str, torch.Tensor]]:
        """The output-quantiles weight file of a bundle trained on ``subjects`` (every modality one of them has)."""
        present = [key for key in modalities if any(key in s.files for s in subjects)]
        return {OUTPUT_QUANTILES_FILE: {k: torch.from_numpy(self.reference(subjects, k)) for k in present}}


def normalised_array(image: sitk.Image, key: str, brain: np.ndarray, scheme: str = MR_SCHEMES[0]) -> np.ndarray:
    """The pipeline's normalisation of one sequence (robust percentiles inside the brain), float64."""
    array = sitk.GetArrayFromImage(image).astype(np.float64)
    return normalise_with_scheme(array, normalisation_params(array, key, brain, scheme=scheme), scheme)


def score_fold(
    subject: Subject,
    bundle_dir: Path,
    training: list[Subject],
    quantiles: ReferenceQuantiles,
    *,
    device: str,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Scores of every request of the held-out ``subject`` (model and both baselines) and its figure slices."""
    from MedTransCore.translate import translate_image

    images = subject.images()
    brain = subject.brain(images)
    arrays = {key: sitk.GetArrayFromImage(image).astype(np.float64) for key, image in images.items()}
    # The figure's slice: the axial slice with the most brain.
    middle = int(np.argmax(brain.reshape(brain.shape[0], -1).sum(1)))
    rows, slices = [], {}
    for request in requests_of(subject):
        truth = arrays[request.target]
        first, *others = request.sources
        result = translate_image(
            images[first],
            first,
            request.target,
            model=str(bundle_dir),
            extra_sources={key: images[key] for key in others} or None,
            device=device,
        )
        synthetic = sitk.GetArrayFromImage(result.image).astype(np.float64)
        scores = {"model": brain_mr_metrics(synthetic, truth, brain)}
        reference = quantiles.reference(training, request.target)
        per_source = {"identity": [], "histogram_matching": []}
        for key in request.sources:
            per_source["identity"].append(brain_mr_metrics(arrays[key], truth, brain))
            normalised = normalised_array(images[key], key, brain, quantiles.scheme)
            matched = match_quantiles(normalised, volume_quantiles(normalised, brain), reference)
            matched[~brain] = matched[~brain].min() if (~brain).any() else 0.0
            per_source["histogram_matching"].append(brain_mr_metrics(matched, truth, brain))
        # With several sources a baseline is the best single source on each metric (the stricter comparison).
        for method, candidates in per_source.items():
            scores[method] = best_per_metric(candidates)
        for method, values in scores.items():
            rows.append({"case": subject.case, "request": request.key, "method": method, **values})
        log(
            f"  {subject.case} {request.key}: PSNR_brain model {scores['model']['PSNR_brain']:.2f} "
            f"identity {scores['identity']['PSNR_brain']:.2f} HM {scores['histogram_matching']['PSNR_brain']:.2f}; "
            f"SSIM_brain {scores['model']['SSIM_brain']:.3f}"
        )
        scaled = [brain_mr_scale(a, brain)[middle] for a in (arrays[first], synthetic, truth)]
        slices[request.key] = np.stack([*scaled, np.abs(scaled[1] - scaled[2])]).astype(np.float32)
    return rows, slices


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per request: subjects, mean and std of every metric per method, and whether it is listed (and why not)."""
    summary: dict[str, Any] = {}
    for key in dict.fromkeys(r["request"] for r in rows):
        mine = [r for r in rows if r["request"] == key]
        cases = sorted({r["case"] for r in mine})
        by = {(r["case"], r["method"]): r for r in mine}
        entry: dict[str, Any] = {"subjects": cases, "methods": {}}
        for method in METHODS:
            values = {m: [by[c, method][m] for c in cases] for m in METRICS}
            entry["methods"][method] = {
                m: {"mean": float(np.mean(v)), "std": float(np.std(v))} for m, v in values.items()
            }
        failures = []
        for case in cases:
            for metric, better in LISTING_METRICS:
                ours = by[case, "model"][metric]
                for baseline in ("identity", "histogram_matching"):
                    theirs = by[case, baseline][metric]
                    if not (ours < theirs if better == "lower" else ours > theirs):
                        failures.append(f"{case}: {metric} {ours:.3f} vs {baseline} {theirs:.3f}")
        if len(cases) < MIN_SUBJECTS:
            failures.insert(0, f"only {len(cases)} held-out subject(s); at least {MIN_SUBJECTS} are needed")
        entry["listed"] = not failures
        entry["not_listed_because"] = failures
        summary[key] = entry
    return summary


def parse_request(key: str) -> Request:
    sources, target = key.split("->")
    return Request(tuple(sources.split("+")), target)


def crossval(
    config: dict[str, Any] | Recipe,
    out: Path,
    *,
    bundle: Path | None = None,
    folds: list[str] | None = None,
    device: str = "cpu",
    command: str = "",
    log: Callable[[str], None] = print,
    partial: bool = False,
) -> dict[str, Any] | None:
    """Run (or resume) the cross-validation into ``out``; with every fold scored, summarise and export ``bundle``.

    Args:
        config: a resolved run config whose data are real subjects, or a recipe of several stages (the last one's
            data name the subjects).
        out: folder of the fold runs, their scores and ``crossval.json``.
        bundle: where to write the bundle trained on every subject (``None``: no export).
        folds: held-out cases to run now (default: every subject); the summary needs every fold.
        device: training and inference device.
        command: the command line (recorded in the bundle).
        log: where progress lines go.
        partial: summarise the folds scored so far (the others are recorded in ``not_held_out``) instead of
            waiting for every fold.

    Returns:
        the summary (``crossval.json``), or ``None`` when folds remain to be run.
    """
    recipe = config if isinstance(config, Recipe) else single_stage(config)
    config = recipe.final
    subjects = subjects_of(config)
    names = [s.case for s in subjects]
    unknown = sorted(set(folds or []) - set(names))
    if unknown:
        raise InputError(f"--folds names unknown subjects {', '.join(unknown)}; the data has {', '.join(names)}")
    out.mkdir(parents=True, exist_ok=True)
    quantiles = ReferenceQuantiles(config["data"].get("normalisation", MR_SCHEMES[0]))
    request_metadata = every_request_metadata(subjects)
    for subject in subjects:
        if folds is not None and subject.case not in folds:
            continue
        fold_dir = out / f"fold-{subject.case}"
        if (fold_dir / SCORES_NAME).is_file():
            log(f"fold {subject.case}: scored")
            continue
        model_run = train_recipe(recipe, fold_dir, subject.case, device=device, log=log)
        bundle_dir = fold_dir / "bundle"
        training = [s for s in subjects if s.case != subject.case]
        if not bundle_dir.is_dir():
            metadata = {**request_metadata, "training": {}, "metrics": {}}
            run_bundle(model_run, bundle_dir, metadata, extra_weights=_output_weights(config, quantiles, training))
        rows, slices = score_fold(subject, bundle_dir, training, quantiles, device=device, log=log)
        np.savez_compressed(fold_dir / SLICES_NAME, **slices)
        (fold_dir / SCORES_NAME).write_text(json.dumps(rows, indent=1))
    missing = [s.case for s in subjects if not (out / f"fold-{s.case}" / SCORES_NAME).is_file()]
    if missing and not partial:
        log(f"folds still to run: {', '.join(missing)}")
        return None
    scored = [s for s in subjects if s.case not in missing]
    if len(scored) < MIN_SUBJECTS:
        raise InputError(f"only {len(scored)} fold(s) scored; at least {MIN_SUBJECTS} are needed to summarise")
    rows = [row for s in scored for row in json.loads((out / f"fold-{s.case}" / SCORES_NAME).read_text())]
    summary = {
        "protocol": (
            "leave-one-subject-out: each subject scored with the model trained on all the others (same recipe); "
            "baselines: identity and histogram matching (reference quantiles of the fold's training subjects); "
            "several sources: each baseline's best single source per metric; metrics: "
            "MedTransCore.metrics.brain_mr_metrics"
        ),
        "listing_rule": (
            f"beats identity and histogram matching on {', '.join(m for m, _ in LISTING_METRICS)} on every held-out "
            f"subject (at least {MIN_SUBJECTS})"
        ),
        "subjects": [s.case for s in scored],
        # Partial runs (--partial): subjects whose fold was not run; they are training subjects of every fold.
        "not_held_out": missing,
        "requests": summarise(rows),
        "rows": rows,
    }
    (out / "crossval.json").write_text(json.dumps(summary, indent=1))
    if bundle is not None:
        export_final(recipe, out, bundle, summary, subjects, command=command, log=log, device=device)
    return summary


def export_final(
    recipe: Recipe | dict[str, Any],
    out: Path,
    bundle: Path,
    summary: dict[str, Any],
    subjects: list[Subject],
    *,
    command: str,
    log: Callable[[str], None],
    device: str,
) -> Bundle:
    """Train (or reuse) ``out/all`` on every subject and save it as ``bundle``, listing what the folds earned."""
    if bundle.exists():
        raise InputError(f"{bundle} already exists; remove it or choose another --bundle")
    recipe = recipe if isinstance(recipe, Recipe) else single_stage(recipe)
    config = recipe.final
    full = fold_config(config, None)
    final = train_recipe(recipe, out / "all", None, device=device, log=log)
    listed = [parse_request(k) for k, v in summary["requests"].items() if v["listed"]]
    if not listed:
        raise InputError("no request beat both baselines on every held-out subject: nothing to list, no bundle")
    _, record, checkpoint = load_run(final)
    metrics = {
        "crossval": {
            "protocol": summary["protocol"],
            "listing_rule": summary["listing_rule"],
            "subjects": summary["subjects"],
            "not_held_out": summary.get("not_held_out", []),
            "requests": {k: {kk: vv for kk, vv in v.items()} for k, v in summary["requests"].items()},
            # Per held-out subject, so a later comparison (the calibration) can be made subject by subject.
            "rows": summary.get("rows", []),
        }
    }
    metadata = {
        "pairs": [[*r.sources, r.target] for r in listed if len(r.sources) == 1],
        "source_sets": [{"sources": list(r.sources), "target": r.target} for r in listed if len(r.sources) > 1],
        "metrics": metrics,
        "training": {
            "stage": full["stage"],
            "commands": record.get("commands", []),
            "crossval_command": command,
            "runs": record.get("runs", []),
            "device": record.get("device", {}),
            "steps": int(checkpoint["step"]),
            "target_steps": int(full["train"]["steps"]),
            "data": dict(full["data"]),
            "train_cases": [s.case for s in subjects],
            "config": full,
        },
    }
    quantiles = ReferenceQuantiles(config["data"].get("normalisation", MR_SCHEMES[0]))
    extra = _output_weights(config, quantiles, subjects)
    saved = run_bundle(final, bundle, metadata, export=config.get("export", {}), extra_weights=extra)
    log(f"bundle {saved.name} written to {bundle}: lists {', '.join(r.key for r in listed)}")
    return saved


def _output_weights(
    config: dict[str, Any], quantiles: ReferenceQuantiles, training: list[Subject]
) -> dict[str, dict[str, torch.Tensor]]:
    """A ``slice_unet`` bundle's output quantiles from its training subjects (none for other families)."""
    if config["stage"] != "slice_unet":
        return {}
    return quantiles.weights(training, list(config["data"]["modalities"]))


def fmt(stats: dict[str, float], metric: str) -> str:
    digits = 2 if metric.startswith("PSNR") else 3
    if not math.isfinite(stats["mean"]):
        return "n/a"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
