"""Contrast-phase models on held-out abdomen phantoms: the seed's image metrics and the HU error where contrast shows.

    python -m medtrans_training.contrast_eval phantom-abdomen-s2ldm runs/abdomen-unet-bundle ... \\
        --seeds 2000-2003 --out docs/contrast_phase_test.md [--figure docs/contrast_phase_test.png]

Every model translates the non-contrast CT of each case to the arterial and the portal-venous phase through
``MedTransCore.translate.translate_image`` (what a user gets), and is compared with the identity (the non-contrast
CT as is: "no enhancement at all"). Scores, all against the true phase of the same phantom:

* over the body (the case's body mask): ``NMSE``, ``PSNR``, ``SSIM`` and ``MAE`` of
  ``MedTransCore.metrics.compute_metrics`` (SynthRAD definitions: PSNR and SSIM on [-1024, 3000] HU, so they run
  higher than on the seed's normalised images);
* inside each enhancing structure (its phantom label, every voxel): MAE in HU, the clinically relevant error (an
  aorta 100 HU too dark reads as a missed arterial phase), and the mean enhancement error (ME) in HU.

The markdown table gives the mean over cases; the JSON next to it holds every case.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from MedTransCore.metrics import compute_metrics

from .evaluate import json_safe

__all__ = ["STRUCTURES", "evaluate_contrast", "main", "markdown"]

PHASES = {"CT_ARTERIAL": "arterial", "CT_VENOUS": "portal-venous"}
#: Enhancing structures scored on their own: name -> phantom label name (``MedTransCore.phantoms.Label``).
STRUCTURES = {"aorta": "ARTERY", "portal vein": "PORTAL_VEIN", "liver": "LIVER", "kidney cortex": "KIDNEY_CORTEX"}
IMAGE_METRICS = ("NMSE", "PSNR", "SSIM", "MAE")
IDENTITY = "identity (non-contrast CT)"
WINDOW = (-160.0, 340.0)  # W500/L90: the enhanced aorta stays below white


def _seeds(text: str) -> list[int]:
    start, _, stop = text.partition("-")
    try:
        first, last = int(start), int(stop or start)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds takes START-STOP (inclusive), got {text!r}") from None
    return list(range(first, last + 1))


def case_rows(
    case, predictions: dict[str, sitk.Image], target: str, labels: np.ndarray, body: np.ndarray
) -> list[dict[str, Any]]:
    """One row per method: image metrics over the body and MAE / ME in HU per enhancing structure.

    Args:
        case: the phantom case (``PhantomCase``).
        predictions: ``{method: image}`` on the case's grid.
        target: the phase's registry key.
        labels: ``(Z, Y, X)`` phantom labels; body: ``(Z, Y, X)`` boolean body mask.
    """
    from MedTransCore.phantoms import Label

    truth = sitk.GetArrayFromImage(case.images[target]).astype(np.float64)
    rows = []
    for method, image in predictions.items():
        predicted = sitk.GetArrayFromImage(image).astype(np.float64)
        metrics = compute_metrics(predicted, truth, target, mask=body)
        row = {"case": case.seed, "target": target, "method": method, **{m: metrics[m] for m in IMAGE_METRICS}}
        for name, label in STRUCTURES.items():
            region = labels == Label[label]
            error = predicted[region] - truth[region]
            row[f"MAE {name}"] = float(np.abs(error).mean()) if error.size else math.nan
            row[f"ME {name}"] = float(error.mean()) if error.size else math.nan
            row[f"true enhancement {name}"] = float(
                (truth[region] - sitk.GetArrayViewFromImage(case.images["CT"])[region]).mean()
            )
        rows.append(row)
    return rows


def evaluate_contrast(
    models: list[str],
    seeds: list[int],
    *,
    shape: tuple[int, int, int] = (96, 72, 48),
    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0),
    device: str = "auto",
    keep: dict | None = None,
    progress=print,
) -> list[dict[str, Any]]:
    """Translate each held-out case's non-contrast CT with every model and score it (:func:`case_rows`).

    Args:
        models: installed bundle names or folders; each must list ``CT -> CT_ARTERIAL`` and ``CT -> CT_VENOUS``.
        seeds: abdomen phantom seeds (held out: never trained on, never used to choose anything).
        shape, spacing: the phantom grid ``(x, y, z)`` (the training data's).
        keep: when given, filled with the mid axial slice ``{(seed, target, method): array}`` (plus ``"source"``
            and ``"truth"``) for :func:`draw_figure`.
    """
    from MedTransCore.bundles import find_bundle
    from MedTransCore.phantoms import generate_phantom
    from MedTransCore.translate import translate_image

    bundles = [find_bundle(m) for m in models]
    for bundle in bundles:
        missing = [t for t in PHASES if not bundle.supports("CT", t)]
        if missing:
            raise SystemExit(f"model {bundle.name!r} does not translate CT -> {', '.join(missing)}")
    rows = []
    for seed in seeds:
        case = generate_phantom("abdomen", seed=seed, shape=shape, spacing=spacing, modalities=["CT", *PHASES])
        labels = sitk.GetArrayFromImage(case.labels)
        body = sitk.GetArrayFromImage(case.body_mask) > 0
        mid = labels.shape[0] // 2
        for target in PHASES:
            predictions = {IDENTITY: case.images["CT"]}
            for bundle in bundles:
                progress(f"seed {seed}: CT -> {target} with {bundle.name}")
                result = translate_image(case.images["CT"], "CT", target, model=bundle.path, device=device)
                predictions[bundle.name] = result.image
            rows += case_rows(case, predictions, target, labels, body)
            if keep is not None:
                keep[(seed, target, "truth")] = sitk.GetArrayFromImage(case.images[target])[mid]
                for method, image in predictions.items():
                    keep[(seed, target, method)] = sitk.GetArrayFromImage(image)[mid]
    return rows


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{target: {method: {column: mean over cases}}}`` (NaN-aware), plus ``cases``."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        grouped[(row["target"], row["method"])].append(row)
    summary: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (target, method), group in grouped.items():
        columns = [k for k in group[0] if k not in ("case", "target", "method")]
        means = {}
        for column in columns:
            values = [r[column] for r in group if math.isfinite(r[column])]
            means[column] = float(np.mean(values)) if values else math.nan
        summary[target][method] = {**means, "cases": len(group)}
    return dict(summary)


def markdown(summary: dict[str, dict[str, dict[str, float]]], seeds: list[int]) -> str:
    """Per phase: one row per method, the image metrics then MAE (ME) in HU per structure."""
    lines = []
    for target, methods in summary.items():
        truth = next(iter(methods.values()))
        enhancement = ", ".join(f"{s} {truth[f'true enhancement {s}']:.0f}" for s in STRUCTURES)
        lines += [
            f"**Non-contrast CT -> {PHASES[target]}** (true mean enhancement, HU: {enhancement})",
            "",
            "| method | NMSE | PSNR (dB) | SSIM | MAE body (HU) | "
            + " | ".join(f"{s}: MAE (ME) HU" for s in STRUCTURES)
            + " |",
            "|---" * (5 + len(STRUCTURES)) + "|",
        ]
        for method, v in methods.items():
            cells = [f"{v['NMSE']:.4f}", f"{v['PSNR']:.1f}", f"{v['SSIM']:.3f}", f"{v['MAE']:.1f}"]
            cells += [f"{v[f'MAE {s}']:.0f} ({v[f'ME {s}']:+.0f})" for s in STRUCTURES]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    first, last = seeds[0], seeds[-1]
    lines.append(
        f"Mean over abdomen phantom seeds {first}-{last} (held out). NMSE, PSNR, SSIM and MAE over the body "
        "(SynthRAD definitions: PSNR and SSIM on [-1024, 3000] HU); per structure over its label; ME = mean "
        "(synthetic - true): negative is too little enhancement."
    )
    return "\n".join(lines) + "\n"


def draw_figure(keep: dict, seed: int, methods: list[str], out: str | Path) -> None:
    """Mid axial slice of one case: non-contrast | each method | truth, one row per phase, W500/L90."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [IDENTITY, *methods, "truth"]
    fig, axes = plt.subplots(len(PHASES), len(columns), figsize=(3.2 * len(columns), 2.7 * len(PHASES)))
    for r, target in enumerate(PHASES):
        for c, method in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(keep[(seed, target, method)], cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
            ax.set_xticks([])
            ax.set_yticks([])
            title = "non-contrast CT" if method == IDENTITY else method
            ax.set_title(f"{title}" + (f"\n-> {PHASES[target]}" if c == 0 else ""), fontsize=9)
    fig.suptitle(f"Abdomen phantom seed {seed} (held out), mid axial slice, W500/L90", fontsize=10)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """``python -m medtrans_training.contrast_eval MODEL [MODEL ...] --seeds A-B --out MD [--figure PNG]``."""
    parser = argparse.ArgumentParser(
        prog="python -m medtrans_training.contrast_eval", description=__doc__.split("\n")[0]
    )
    parser.add_argument("models", nargs="+", help="bundle folders or installed names (CT -> arterial and venous)")
    parser.add_argument("--seeds", type=_seeds, default=_seeds("2000-2003"), help="held-out phantom seeds A-B")
    parser.add_argument("--shape", default="96,72,48", help="phantom voxels x,y,z (default: the training data's)")
    parser.add_argument("--spacing", type=float, default=4.0, help="phantom voxel size in mm (default 4)")
    parser.add_argument("--out", required=True, help="markdown table to write (JSON next to it)")
    parser.add_argument("--figure", help="also draw the first seed's mid slice: input | each model | truth")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    keep: dict | None = {} if args.figure else None
    rows = evaluate_contrast(
        args.models,
        args.seeds,
        shape=shape,
        spacing=(args.spacing,) * 3,
        device=args.device,
        keep=keep,
        progress=lambda line: print(line, file=sys.stderr),
    )
    summary = summarise(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = markdown(summary, args.seeds)
    out.write_text(table, encoding="utf-8")
    command = "python -m medtrans_training.contrast_eval " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"command": command, "summary": summary, "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(json_safe(payload), indent=2) + "\n")
    if args.figure:
        methods = [m for m in summary[next(iter(PHASES))] if m != IDENTITY]
        draw_figure(keep, args.seeds[0], methods, args.figure)
    print(table)


if __name__ == "__main__":
    main()
