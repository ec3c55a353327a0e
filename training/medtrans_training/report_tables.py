"""The README's tables, printed from a bundle's recorded numbers (``metrics.validation`` and ``metrics.test``).

One row per trained pair: whether it is listed (and, if not, what it lost on), its validation numbers (where the
choice was made) and, for listed pairs, its test numbers (what the bundle reports), each next to identity and
histogram matching on the same cases. Run::

    python -m medtrans_training.report_tables MedTransCore/models/bundles/phantom-head-unet [more bundles ...]
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from MedTransCore.bundles import load_bundle
from MedTransCore.modalities import get_modality

from .selection import MIN_SSIM, RULE, beats, trained_pairs

BASELINE_LABELS = {"identity": "identity", "histogram-matching": "histogram matching"}


def _mae(value: float, target: str) -> str:
    if get_modality(target).is_ct:
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
    return f"{value:.3f}"


def cell(scores: dict[str, float] | None, target: str) -> str:
    """``MAE / SSIM / PSNR`` of one method on one pair, or ``-`` when it was not measured."""
    if not scores or any(scores.get(m) is None or not math.isfinite(scores[m]) for m in ("MAE", "SSIM", "PSNR")):
        return "-"
    return f"{_mae(scores['MAE'], target)} / {scores['SSIM']:.3f} / {scores['PSNR']:.1f}"


def verdict(pair: str, metadata: dict[str, Any]) -> str:
    """``yes``, or ``no`` with what it lost on (from the validation numbers) or why it could not be reported."""
    metrics, name = metadata["metrics"], metadata["name"]
    if pair.split("->") in metadata["pairs"]:
        return "yes"
    methods = metrics["validation"]["summary"].get(pair, {})
    if name not in methods:
        return "no: no validation case"
    losses = []
    for baseline, label in BASELINE_LABELS.items():
        if baseline not in methods:
            continue
        lost = [
            metric
            for metric, better in RULE
            if not beats(methods[name].get(metric), methods[baseline].get(metric), better)
        ]
        if lost:
            losses.append(f"{label} ({', '.join(lost)})")
    if losses:
        return "no: loses to " + " and ".join(losses)
    if not beats(methods[name].get("SSIM"), MIN_SSIM, "higher"):
        return f"no: SSIM not above {MIN_SSIM:g}"
    return "no: no test case"


def pair_table(metadata: dict[str, Any]) -> str:
    """The markdown table of every trained pair of a bundle re-selected by ``medtrans_training.selection``.

    Raises:
        KeyError: metadata without ``metrics.validation`` and ``metrics.test`` (an export from before the split).
    """
    metrics, name = metadata["metrics"], metadata["name"]
    validation, test = metrics["validation"], metrics["test"]
    header = (
        f"| pair | listed | validation: `{name}` | identity | histogram matching "
        f"| test: `{name}` | identity | histogram matching |"
    )
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for source, target in trained_pairs(metadata):
        pair = f"{source}->{target}"
        row = [pair, verdict(pair, metadata)]
        for split in (validation, test):
            methods = split["summary"].get(pair, {})
            row += [cell(methods.get(method), target) for method in (name, *BASELINE_LABELS)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def caption(metadata: dict[str, Any]) -> str:
    """What the cells of :func:`pair_table` are and where the cases come from."""
    metrics = metadata["metrics"]
    validation, test = metrics["validation"], metrics["test"]
    return (
        "Cells: MAE (HU for CT-like targets; for MR targets on the metrics' [0, 1] scale) / SSIM / PSNR (dB), mean "
        f"over the cases. Validation: {len(validation['cases'])} cases ({validation['data']}: "
        f"{', '.join(validation['cases'])}); test: {len(test['cases'])} cases ({test['data']}: "
        f"{', '.join(test['cases'])}); a test mean is over the test cases that hold the pair. "
        "A pair is listed when it beats both baselines on MAE, SSIM and PSNR on validation, its validation SSIM is "
        "above 0, and a test case holds it.\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m medtrans_training.report_tables", description=__doc__.split("\n")[0]
    )
    parser.add_argument("bundles", nargs="+", help="bundle folders")
    args = parser.parse_args(argv)
    for folder in args.bundles:
        metadata = load_bundle(folder).metadata
        print(f"### {metadata['name']}\n\n{caption(metadata)}\n{pair_table(metadata)}")


if __name__ == "__main__":
    main()
