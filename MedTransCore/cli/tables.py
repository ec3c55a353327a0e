"""Plain-text tables of metrics for the terminal."""

from __future__ import annotations

import math

from ..modalities import get_modality

# Display order; anything else computed is appended.
ORDER = ("MAE", "ME", "PSNR", "SSIM", "MS_SSIM", "NMSE", "NCC", "MAE_air", "MAE_soft_tissue", "MAE_bone")


def metric_unit(name: str, modality: str) -> str:
    if name.startswith("MAE") or name == "ME":
        return "HU" if get_modality(modality).is_ct else "[0-1]"
    return "dB" if name == "PSNR" else ""


def format_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"


def metrics_table(columns: dict[str, dict[str, float]], modality: str) -> str:
    """Rows = metrics, one column per named set, e.g. ``{"synthetic vs reference": m1, "source vs reference": m2}``."""
    names = [n for n in ORDER if any(n in c for c in columns.values())]
    names += sorted({n for c in columns.values() for n in c} - set(names) - {"voxels", "volume_ml"})
    header = ["metric", *columns]
    rows = [[f"{n} [{metric_unit(n, modality)}]" if metric_unit(n, modality) else n] for n in names]
    for row, name in zip(rows, names):
        row.extend(format_value(c.get(name)) for c in columns.values())
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
