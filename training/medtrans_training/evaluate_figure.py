"""The figure of ``medtrans-train evaluate --figure``: what each method made of a few held-out cases.

Per case two rows, the central axial slice of the body (anterior up, patient's right on the left) and its central
coronal slice (head up; it shows how consistent a slice-wise model is along z), and one column per image: source |
each method in the order evaluated | truth. Every image was read, or translated, once by
:func:`medtrans_training.evaluate.evaluate_cases`, which keeps these slices (:func:`central_slices`) when asked.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk

__all__ = ["Slices", "central_slices", "evaluation_figure", "window_limits"]


class Slices(NamedTuple):
    """The central axial ``(Y, X)`` and coronal ``(Z, X)`` slices of an image (LPS-oriented, ready to show: coronal
    head up) and its voxel size ``(x, y, z)`` mm."""

    axial: np.ndarray
    coronal: np.ndarray
    spacing: tuple[float, float, float]


def _lps(image: sitk.Image) -> sitk.Image:
    """The image with axes along L, P and S (a permutation and flips of the voxels, no resampling)."""
    return sitk.DICOMOrient(image, "LPS")


def central_slices(image: sitk.Image, mask: sitk.Image | None = None) -> Slices:
    """The axial and coronal slices through the middle of ``mask``'s bounding box (of the image without one).

    Args:
        image: a 3D image.
        mask: a body mask on ``image``'s grid (non-zero inside).
    """
    oriented = _lps(sitk.Cast(image, sitk.sitkFloat32))
    array = sitk.GetArrayFromImage(oriented)  # (Z = inferior->superior, Y = anterior->posterior, X = right->left)
    inside = sitk.GetArrayFromImage(_lps(mask)) > 0 if mask is not None else np.ones(array.shape, bool)
    if not inside.any():
        inside = np.ones(array.shape, bool)
    z, y = (int(round(np.mean(np.flatnonzero(inside.any(axis=axes))[[0, -1]]))) for axes in ((1, 2), (0, 2)))
    spacing = tuple(float(s) for s in oriented.GetSpacing())
    return Slices(array[z].copy(), np.flipud(array[:, y, :]).copy(), spacing)


def window_limits(modality: str, array: np.ndarray | None = None) -> tuple[float, float]:
    """``(vmin, vmax)`` of the modality's display window (``MedTransCore.modalities.display_window``)."""
    from MedTransCore.modalities import display_window

    level, width = display_window(modality, array)
    return level - width / 2, level + width / 2


def _mae(rows: list[dict[str, Any]], case: str, source: str, target: str, method: str) -> float:
    for row in rows:
        if (row["case"], row["source"], row["target"], row["method"]) == (case, source, target, method):
            return float(row.get("MAE", math.nan))
    return math.nan


def evaluation_figure(
    rows: list[dict[str, Any]],
    keep: dict[tuple[str, str, str, str], Slices],
    path: str | Path,
    *,
    max_cases: int = 4,
    title: str = "",
) -> dict[str, Any]:
    """Write the figure of the first pair in ``keep`` (see the module docstring) as a PNG.

    Args:
        rows: the scores of ``evaluate_cases`` (each column title gives that case's MAE).
        keep: the slices ``evaluate_cases`` kept: ``(case, source, target, name)``, ``name`` a method, ``"source"``
            or ``"truth"``.
        path: the PNG to write.
        max_cases: draw at most this many cases (in the order evaluated).
        title: first line of the figure's title.

    Returns:
        ``{"path", "pair", "rows": ["<case> axial", "<case> coronal", ...], "columns": ["source", *methods,
        "truth"]}``: the layout drawn.

    Raises:
        ValueError: nothing was kept.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from MedTransCore.metrics import metric_unit

    if not keep:
        raise ValueError("no slices were kept: nothing to draw")
    source, target = next(iter(keep))[1:3]
    cases = list(dict.fromkeys(k[0] for k in keep if k[1:3] == (source, target)))[: max(int(max_cases), 1)]
    methods = list(dict.fromkeys(k[3] for k in keep if k[1:3] == (source, target) and k[3] not in ("source", "truth")))
    columns = ["source", *methods, "truth"]
    heights, row_names = [], []
    for case in cases:
        sx, sy, sz = keep[(case, source, target, "source")].spacing
        axial, coronal = keep[(case, source, target, "source")][:2]
        heights += [axial.shape[0] * sy / (axial.shape[1] * sx), coronal.shape[0] * sz / (coronal.shape[1] * sx)]
        row_names += [f"{case} axial", f"{case} coronal"]
    case_heights = [1.6 * (heights[2 * i] + heights[2 * i + 1]) + 0.45 for i in range(len(cases))]
    fig = plt.figure(figsize=(1.6 * len(columns), sum(case_heights) + 0.5), layout="constrained")
    grids = fig.subfigures(len(cases), 1, height_ratios=case_heights, squeeze=False)[:, 0]
    axes = np.concatenate(
        [
            grid.subplots(2, len(columns), squeeze=False, gridspec_kw={"height_ratios": heights[2 * i : 2 * i + 2]})
            for i, grid in enumerate(grids)
        ]
    )
    target_limits = window_limits(target)
    unit = metric_unit("MAE", target)
    for index, case in enumerate(cases):
        source_slices = keep[(case, source, target, "source")]
        source_limits = window_limits(source, source_slices.axial)
        for column, name in enumerate(columns):
            slices = keep.get((case, source, target, name))
            label = {"source": f"source {source}", "truth": f"truth {target}"}.get(name)
            if label is None:
                label = f"{name} SYNTHETIC\nMAE {_mae(rows, case, source, target, name):.1f} {unit}".rstrip()
            for view in range(2):
                ax = axes[2 * index + view, column]
                ax.set_xticks([]), ax.set_yticks([])
                if slices is None:  # a method read from a cache of scores: nothing translated here
                    ax.set_axis_off()
                    continue
                sx, sy, sz = slices.spacing
                vmin, vmax = source_limits if name == "source" else target_limits
                ax.imshow(slices[view], cmap="gray", vmin=vmin, vmax=vmax, aspect=(sy if view == 0 else sz) / sx)
            axes[2 * index, column].set_title(label, fontsize=7)
        axes[2 * index, 0].set_ylabel(f"{case}\naxial", fontsize=7)
        axes[2 * index + 1, 0].set_ylabel("coronal", fontsize=7)
    level, window = (target_limits[0] + target_limits[1]) / 2, target_limits[1] - target_limits[0]
    heading = f"{title}\n" if title else ""
    fig.suptitle(
        f"{heading}{source} → {target}: model columns are SYNTHETIC; {target} window W{window:g}/L{level:g}",
        fontsize=8,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"path": path, "pair": (source, target), "rows": row_names, "columns": columns}
