"""Score a bundle on held-out cases against the shipped baselines, through the exact inference path.

Every prediction comes from ``MedTransCore.translate.translate_image(..., model=...)`` on the whole source
volume (its own geometry), and every score from ``MedTransCore.metrics.compute_metrics`` inside the
reference's body mask (or the case's mask), so what is reported is what a user gets.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from MedTransCore.bundles import Bundle, find_bundle
from MedTransCore.errors import BundleError
from MedTransCore.metrics import compute_metrics, metric_unit
from MedTransCore.preprocess import body_mask, resample_like
from MedTransCore.translate import translate_image

from .evaluate_figure import central_slices

BASELINES = ("identity", "histogram-matching")
#: Averaged over cases by :func:`summarise`; the markdown table shows :data:`TABLE_METRICS` unless told otherwise.
SUMMARY_METRICS = ("MAE", "ME", "PSNR", "SSIM", "MS_SSIM", "NCC", "SLICE_DIFF")
TABLE_METRICS = ("MAE", "PSNR", "SSIM", "MS_SSIM", "NCC")
CaseSource = Iterable[tuple[str, Callable[[], tuple[dict[str, sitk.Image], sitk.Image | None]]]]


def _reference_on_source(reference: sitk.Image, source: sitk.Image) -> sitk.Image:
    same = reference.GetSize() == source.GetSize() and np.allclose(reference.GetOrigin(), source.GetOrigin())
    return (
        reference
        if same
        else resample_like(reference, source, default_value=float(np.min(sitk.GetArrayViewFromImage(reference))))
    )


def evaluate_cases(
    bundle: Bundle,
    cases: CaseSource,
    *,
    baselines: Iterable[str] = BASELINES,
    pairs: Iterable[tuple[str, str]] | None = None,
    device: str = "auto",
    progress: Callable[[str], None] | None = None,
    cache: dict[tuple[str, str, str, str], dict[str, Any]] | None = None,
    keep: dict[tuple[str, str, str, str], Any] | None = None,
) -> list[dict[str, Any]]:
    """Translate every held-out pair with the bundle and each baseline and score it.

    Args:
        bundle: the model under test.
        cases: ``(case id, loader)``; a loader returns ``({key: image}, mask or None)``.
        baselines: installed bundle names or folders to compare with (skipped for pairs they do not support).
        pairs: ``(source, target)`` pairs to score; default: the bundle's pairs.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: called with a line of text per translation.
        cache: rows by ``(case, source, target, method)``, read and filled: several bundles scored on the same
            cases translate each baseline once.
        keep: when given, filled with the central axial and coronal slices of the body
            (``evaluate_figure.central_slices``) by ``(case, source, target, name)``, ``name`` a method,
            ``"source"`` or ``"truth"``, for ``evaluate_figure.evaluation_figure``; a method read from ``cache``
            keeps none.

    Returns:
        rows ``{"case", "source", "target", "method", **metrics}``; ``method`` is the bundle name or a baseline.
    """
    pairs = list(pairs) if pairs is not None else bundle.pairs
    models: list[tuple[str, Bundle]] = [(bundle.name, bundle)]
    for name in baselines:
        other = find_bundle(name)
        models.append((other.name, other))
    rows = []
    for case, load in cases:
        images, case_mask = load()
        for source, target in pairs:
            if source not in images or target not in images:
                continue
            reference = _reference_on_source(images[target], images[source])
            if case_mask is not None:
                mask_image = resample_like(
                    case_mask, images[source], interpolator=sitk.sitkNearestNeighbor, default_value=0
                )
            else:
                mask_image = body_mask(reference, target)
            mask = sitk.GetArrayFromImage(mask_image) > 0
            ref_array = sitk.GetArrayFromImage(reference)
            if keep is not None:
                keep[(case, source, target, "source")] = central_slices(images[source], mask_image)
                keep[(case, source, target, "truth")] = central_slices(reference, mask_image)
            for method, model in models:
                if not model.supports(source, target):
                    continue
                key = (case, source, target, method)
                if cache is not None and key in cache:
                    rows.append(cache[key])
                    continue
                if progress is not None:
                    progress(f"{case}: {source}->{target} with {method}")
                result = translate_image(images[source], source, target, model=model.path, device=device)
                metrics = compute_metrics(sitk.GetArrayFromImage(result.image), ref_array, target, mask=mask)
                rows.append({"case": case, "source": source, "target": target, "method": method, **metrics})
                if cache is not None:
                    cache[key] = rows[-1]
                if keep is not None:
                    keep[key] = central_slices(result.image, mask_image)
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean of each metric over cases: ``{"S->T": {method: {metric: mean, "cases": n}}}`` (NaN-aware)."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(f"{row['source']}->{row['target']}", row["method"])].append(row)
    summary: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (pair, method), group in grouped.items():
        means = {}
        for metric in SUMMARY_METRICS:
            values = [r[metric] for r in group if metric in r and math.isfinite(r[metric])]
            means[metric] = float(np.mean(values)) if values else math.nan
        summary[pair][method] = {**means, "cases": len(group)}
    return dict(summary)


def markdown_table(
    summary: dict[str, dict[str, dict[str, float]]], title: str = "", metrics: tuple[str, ...] = TABLE_METRICS
) -> str:
    """One row per (pair, method): the number of cases and the mean of each of ``metrics`` (of
    :data:`SUMMARY_METRICS`; default MAE, PSNR, SSIM, MS-SSIM, NCC)."""
    unknown = [m for m in metrics if m not in SUMMARY_METRICS]
    if unknown:
        raise ValueError(f"unknown table metric(s) {', '.join(unknown)}; choose from {', '.join(SUMMARY_METRICS)}")
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| pair | method | cases | " + " | ".join(metrics) + " |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in metrics) + " |",
    ]
    for pair in sorted(summary):
        target = pair.split("->")[1]
        for method, values in summary[pair].items():
            cells = []
            for metric in metrics:
                unit = metric_unit(metric, target)
                value = values[metric]
                text = (
                    "n/a" if not math.isfinite(value) else (f"{value:.1f}" if unit in ("HU", "dB") else f"{value:.4f}")
                )
                cells.append(f"{text} {unit}".strip() if unit and text != "n/a" else text)
            lines.append(f"| {pair} | {method} | {values['cases']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def json_safe(value: Any) -> Any:
    """Replace non-finite floats by ``None`` (strict JSON), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_report(
    rows: list[dict[str, Any]], out: str | Path, title: str = "", metrics: tuple[str, ...] = TABLE_METRICS
) -> dict:
    """Write ``out`` (markdown table) and ``out`` with ``.json`` (rows + summary); returns the summary."""
    out = Path(out)
    if not rows:
        raise BundleError("nothing was evaluated: no held-out case has an image pair the model supports")
    summary = summarise(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(markdown_table(summary, title, metrics), encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(json_safe({"summary": summary, "rows": rows}), indent=2) + "\n")
    return summary
