"""The README table and the figure of a cross-validation (``crossval.json`` and the folds' ``slices.npz``).

The table has one row per request: held-out subjects, then mean ± std over them of the whole-volume PSNR and SSIM
and the in-brain PSNR, SSIM and MAE of the model, the in-brain ones of both baselines, and whether it is listed.
The figure has one row per request (listed ones first): source | synthetic | truth | |synthetic - truth| on the
axial slice with the most brain of a held-out subject, all on the metric's [0, 1] scale.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .crossval import SLICES_NAME, fmt, parse_request

BEGIN, END = "<!-- crossval:{name}:begin -->", "<!-- crossval:{name}:end -->"


def crossval_table(summary: dict[str, Any]) -> str:
    """Markdown table of a cross-validation summary (see the module docstring)."""
    head = (
        "| request | subjects | PSNR whole (dB) | SSIM whole | PSNR brain (dB) | SSIM brain | MAE brain "
        "| identity PSNR / SSIM / MAE brain | histogram matching PSNR / SSIM / MAE brain | listed |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for key, entry in _ordered(summary):
        model, identity, matched = (entry["methods"][m] for m in ("model", "identity", "histogram_matching"))

        def brain(stats: dict[str, Any]) -> str:
            return " / ".join(fmt(stats[m], m) for m in ("PSNR_brain", "SSIM_brain", "MAE_brain"))

        request = key.replace("MR_", "").replace("->", " → ").replace("+", " + ")
        cells = [
            request,
            str(len(entry["subjects"])),
            *(fmt(model[m], m) for m in ("PSNR_whole", "SSIM_whole", "PSNR_brain", "SSIM_brain", "MAE_brain")),
            brain(identity),
            brain(matched),
            "yes" if entry["listed"] else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    table = head + "\n".join(lines) + "\n"
    if summary.get("not_held_out"):
        table += f"\nSubjects not held out (training subjects of every fold): {', '.join(summary['not_held_out'])}.\n"
    return table


def _ordered(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Single-source requests first, then by source count, target and sources."""
    items = list(summary["requests"].items())
    return sorted(items, key=lambda kv: (len(parse_request(kv[0]).sources), parse_request(kv[0]).target, kv[0]))


def crossval_figure(summary: dict[str, Any], out: Path, path: Path, *, max_rows: int = 16) -> Path:
    """Write the figure (see the module docstring) from the folds' slices; listed requests first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = []
    for key, entry in sorted(_ordered(summary), key=lambda kv: not kv[1]["listed"]):
        for case in entry["subjects"]:
            slices = np.load(out / f"fold-{case}" / SLICES_NAME)
            if key in slices:
                chosen.append((key, case, entry["listed"], slices[key]))
                break
    chosen = chosen[:max_rows]
    fig, axes = plt.subplots(len(chosen), 4, figsize=(8, 2.1 * len(chosen)), squeeze=False)
    titles = ("source", "synthetic", "truth", "|synthetic - truth|")
    for row, (key, case, listed, panels) in enumerate(chosen):
        for column, (panel, title) in enumerate(zip(panels, titles)):
            ax = axes[row, column]
            ax.imshow(np.flipud(panel), cmap="magma" if column == 3 else "gray", vmin=0, vmax=1 if column < 3 else 0.5)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
        label = key.replace("MR_", "").replace("->", " → ")
        axes[row, 0].set_ylabel(f"{label}\n{case}\n{'listed' if listed else 'not listed'}", fontsize=7)
    fig.suptitle("Leave-one-subject-out: each row a held-out subject (synthetic labelled SYNTHETIC)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))  # room for the title above the headers
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def replace_block(text: str, name: str, block: str) -> str:
    """Replace what lies between the ``crossval:NAME`` markers of a README.

    Raises:
        ValueError: the README has no such markers.
    """
    begin, end = BEGIN.format(name=name), END.format(name=name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"no {begin} ... {end} block to replace")
    return pattern.sub(lambda _: f"{begin}\n{block.rstrip()}\n{end}", text)
