"""A one-page PNG report of a translation, and the metrics as JSON.

The page shows axial, coronal and sagittal slices through the middle of the body for the source, the SYNTHETIC
output, the reference and the difference (synthetic - reference), each in its modality's display window, with
the metrics next to them. Views follow the radiological convention: axial seen from the feet (anterior up,
patient right on the left), coronal from the front and sagittal from the patient's left (anterior on the
left), head up; pixels keep their physical aspect ratio.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .errors import InputError
from .metrics import CT_METRIC_NAMES, grid_difference, metric_unit, to_metric_scale
from .modalities import display_window, get_modality
from .preprocess import body_mask

DPI = 100
CELL_IN = 3.0  # size of one image cell in inches
TEXT_IN = 4.0  # width of the metrics panel in inches
TEXT_CHARS = 40  # characters per line of the metrics panel (10 pt monospace)
CT_DIFFERENCE_HU = 200.0  # colour range of the CT difference map, +- HU
# (view, row label, patient directions at the top / bottom / left / right edge of the image)
VIEWS = (
    ("axial", "Axial", "A", "P", "R", "L"),
    ("coronal", "Coronal", "S", "I", "R", "L"),
    ("sagittal", "Sagittal", "S", "I", "A", "P"),
)
METRIC_ORDER = CT_METRIC_NAMES + ("voxels", "volume_ml")
SYNTHETIC_WARNING = "SYNTHETIC image computed by a model, not an acquired scan: check it against the source."


def _atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write`` on a temporary file next to ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _json_safe(value):
    """``value`` with NaN/inf as ``None`` and numpy scalars/arrays, tuples and paths as plain JSON types."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_metrics_json(path: str | Path, metrics: dict, **extra) -> Path:
    """Write ``{"metrics": metrics, **extra}`` as JSON (NaN/inf -> null, sorted keys, indent 2), atomically."""
    text = json.dumps(_json_safe({"metrics": metrics, **extra}), sort_keys=True, indent=2, allow_nan=False)
    return _atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def _oriented(image: sitk.Image, grid: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``image`` on ``grid`` (resampled in physical space if needed), as an LPS ``(Z, Y, X)`` array and spacing."""
    if grid_difference(image, grid) is not None:
        low = float(sitk.GetArrayViewFromImage(image).min())
        image = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, low, sitk.sitkFloat64)
    # LPS: x towards the patient's left, y posterior, z superior (identity direction).
    image = sitk.DICOMOrient(image, "LPS")
    return sitk.GetArrayFromImage(image).astype(np.float32), image.GetSpacing()


def _body_centre(body: np.ndarray) -> tuple[int, int, int]:
    """Centre of the bounding box of a ``(Z, Y, X)`` body mask (of the volume when the mask is empty)."""
    if not body.any():
        return tuple(n // 2 for n in body.shape)
    centre = []
    for axis in range(3):
        hits = np.flatnonzero(body.any(axis=tuple(a for a in range(3) if a != axis)))
        centre.append(int((hits[0] + hits[-1]) // 2))
    return tuple(centre)


def _slices(array: np.ndarray, centre: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Axial, coronal and sagittal slices of an LPS ``(Z, Y, X)`` array, rows top to bottom as displayed."""
    k, j, i = centre
    return {"axial": array[k], "coronal": array[::-1, j, :], "sagittal": array[::-1, :, i]}


def _aspects(spacing: tuple[float, float, float]) -> dict[str, float]:
    sx, sy, sz = spacing
    return {"axial": sy / sx, "coronal": sz / sx, "sagittal": sz / sy}


def _format(name: str, value: float | None, modality: str) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if name == "voxels":
        return f"{int(value):,}"
    digits = {"HU": 1, "mL": 1, "dB": 2, "norm.": 3}.get(metric_unit(name, modality), 4)
    return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0 turns a rounded -0.0 into 0.0


def _metrics_table(metrics: dict, baseline: dict | None, modality: str, baseline_label: str) -> list[str]:
    """Monospace table lines: metric (unit) | synthetic vs reference [| baseline vs reference]."""
    names = [n for n in METRIC_ORDER if n in metrics] + sorted(set(metrics) - set(METRIC_ORDER))
    header = [("metric", "synthetic"), ("", "vs ref")]
    rows = []
    for name in names:
        unit = metric_unit(name, modality)
        rows.append((f"{name} ({unit})" if unit else name, _format(name, metrics[name], modality)))
    if baseline is not None:
        header = [header[0] + (baseline_label,), header[1] + ("vs ref",)]
        rows = [row + (_format(name, baseline.get(name), modality),) for row, name in zip(rows, names)]
    widths = [max(len(row[c]) for row in header + rows) for c in range(len(header[0]))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if c == 0 else cell.rjust(w) for c, (cell, w) in enumerate(zip(row, widths)))

    return [line(r) for r in header] + ["-" * (sum(widths) + 2 * (len(widths) - 1))] + [line(r) for r in rows]


def _scale_note(modality: str) -> str:
    if get_modality(modality).is_ct:
        return "MAE/ME in HU; PSNR, SSIM, MS-SSIM on [-1024, 3000] HU (SynthRAD)."
    return "MR: each scan scaled 0..1 by its own 99.5th percentile in the mask."


def _panels(
    source: sitk.Image,
    synthetic: sitk.Image,
    reference: sitk.Image | None,
    source_modality: str,
    target_modality: str,
) -> tuple[list[tuple], dict[str, float]]:
    """The page's columns as ``(title, colour bar label, slices, (vmin, vmax), colormap)``, and the aspects."""
    target = get_modality(target_modality)
    syn, spacing = _oriented(synthetic, synthetic)
    centre = _body_centre(_oriented(body_mask(synthetic, target_modality), synthetic)[0] > 0)
    columns = [(f"Source: {source_modality}", source_modality, _oriented(source, synthetic)[0])]
    columns.append((f"SYNTHETIC {target_modality}", target_modality, syn))
    if reference is not None:
        ref = _oriented(reference, synthetic)[0]
        columns.append((f"Reference: {target_modality}", target_modality, ref))
    panels = []
    for title, modality, array in columns:
        level, width = display_window(modality, array)
        label = f"{get_modality(modality).unit}  (W {width:.4g} / L {level:.4g})"
        panels.append((title, label, _slices(array, centre), (level - width / 2, level + width / 2), "gray"))
    if reference is not None:
        if target.is_ct:
            difference, limit = syn - ref, CT_DIFFERENCE_HU
            label = f"synthetic - reference ({target.unit})"
        else:  # MR scales differ between scans: compare on the metrics' [0, 1] scale
            difference = to_metric_scale(syn, target_modality) - to_metric_scale(ref, target_modality)
            inside = np.abs(difference[(syn > 0) | (ref > 0)])
            limit = max(float(np.percentile(inside, 99)) if inside.size else 0.0, 1e-3)
            label = "synthetic - reference (scaled 0..1 each)"
        panels.append(("Difference", label, _slices(difference, centre), (-limit, limit), "RdBu_r"))
    return panels, _aspects(spacing)


def _draw_images(fig: Figure, grid, panels: list[tuple], aspects: dict[str, float]) -> None:
    """Image columns (one row per view) with a colour bar under each column."""
    for col, (title, bar_label, slices, (vmin, vmax), cmap) in enumerate(panels):
        for row, (view, view_label, *edges) in enumerate(VIEWS):
            ax = fig.add_subplot(grid[row, col])
            shown = ax.imshow(
                slices[view], cmap=cmap, vmin=vmin, vmax=vmax, aspect=aspects[view], interpolation="bilinear"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=13, fontweight="bold" if title.startswith("SYNTHETIC") else "normal")
            if col == 0:
                ax.set_ylabel(view_label, fontsize=13)
                for text, (x, y) in zip(edges, ((0.5, 0.97), (0.5, 0.03), (0.03, 0.5), (0.97, 0.5))):
                    ax.text(
                        x,
                        y,
                        text,
                        ha="center",
                        va="center",
                        color="yellow",
                        fontsize=10,
                        fontweight="bold",
                        transform=ax.transAxes,
                    )
        bar = fig.colorbar(shown, cax=fig.add_subplot(grid[3, col]), orientation="horizontal")
        bar.locator = MaxNLocator(nbins=4)
        bar.update_ticks()
        bar.set_label(bar_label, fontsize=10)
        bar.ax.tick_params(labelsize=9)


def write_report(
    path: str | Path,
    *,
    source: sitk.Image,
    synthetic: sitk.Image,
    reference: sitk.Image | None,
    source_modality: str,
    target_modality: str,
    metrics: dict[str, float] | None = None,
    baseline_metrics: dict[str, float] | None = None,
    title: str = "",
    notes: list[str] | None = None,
    baseline_label: str = "source",
) -> Path:
    """Write the one-page PNG report of a translation.

    Args:
        path: output PNG file (written atomically).
        source: the input scan (3D).
        synthetic: the translated image; its grid is the page's grid (the other images are resampled onto it
            in physical space when their grids differ, without registration).
        reference: the real scan of the target modality, or ``None`` (then only source and synthetic columns).
        source_modality: registry key of ``source``.
        target_modality: registry key of ``synthetic`` and ``reference``.
        metrics: synthetic-vs-reference metrics (``MedTransCore.metrics.compute_metrics``).
        baseline_metrics: the same metrics for a baseline, shown in a second column.
        title: extra title line (case, model).
        notes: free-text lines shown under the metrics.
        baseline_label: column header of ``baseline_metrics`` (default: source vs reference).

    Returns:
        The path of the written PNG (1600 x ~1100 pixels with a reference, ~900 wide without).

    Raises:
        InputError: an unknown modality or an image that is not a scalar 3D volume.
    """
    for name, image in (("source", source), ("synthetic", synthetic), ("reference", reference)):
        if image is not None and (image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1):
            raise InputError(f"the {name} image must be a scalar 3D volume for the report")
    get_modality(source_modality)
    panels, aspects = _panels(source, synthetic, reference, source_modality, target_modality)

    text_width = TEXT_IN if reference is not None else TEXT_IN * 0.75
    heading = f"SYNTHETIC {target_modality} from {source_modality}  ({source_modality} \u2192 {target_modality})"
    heading += f"\n{title}" if title else ""
    head_in = 0.45 + 0.32 * (heading.count("\n") + 1)  # title lines above the column headers, in inches
    height = 3 * CELL_IN + head_in + 0.95
    fig = Figure(figsize=(len(panels) * CELL_IN + text_width, height), dpi=DPI)
    grid = fig.add_gridspec(
        4,
        len(panels) + 1,
        width_ratios=[CELL_IN] * len(panels) + [text_width],
        height_ratios=[CELL_IN] * 3 + [0.12],
        left=0.03,
        right=0.99,
        top=1 - head_in / height,
        bottom=0.55 / height,
        wspace=0.08,
        hspace=0.12,
    )
    fig.suptitle(heading, y=1 - 0.12 / height, va="top", fontsize=17, fontweight="bold", color="#8b0000")
    _draw_images(fig, grid, panels, aspects)

    lines = []
    if metrics:
        lines += _metrics_table(metrics, baseline_metrics, target_modality, baseline_label)
        lines += ["", *textwrap.wrap(_scale_note(target_modality), width=TEXT_CHARS), ""]
    elif reference is None:
        lines += ["No reference image: no metrics.", ""]
    for note in notes or []:
        lines += textwrap.wrap(note, width=TEXT_CHARS, initial_indent="- ", subsequent_indent="  ") or [""]
    lines += ["", *textwrap.wrap(SYNTHETIC_WARNING, width=TEXT_CHARS)]
    text_ax = fig.add_subplot(grid[:, len(panels)])
    text_ax.axis("off")
    text_ax.text(
        0.03,
        0.99,
        "\n".join(lines),
        va="top",
        ha="left",
        family="monospace",
        fontsize=10,
        transform=text_ax.transAxes,
    )
    return _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI, facecolor="white"))
