"""The figure of a run's simulated CBCTs (``data.cbct_simulation``): what the model is trained to undo.

    python -m medtrans_training.cbct_figure CONFIG --out docs/cbct_simulation.png [--cases a,b,c] [--window 1500,-200]

One row per case: CT | simulated CBCT | CBCT - CT on the central axial slice of the body, then the same three on its
central coronal slice. The CT is the one the simulation saw, with the field of view dashed; the CBCT and the
difference (inside the field of view) are what the run's loaders give, read from the run's cache (so nothing is
simulated twice; a case not yet cached is simulated and stored, as training would). Each row's title gives the case,
its split and the simulator's settings and metadata (fan, mAs, views, scatter, field of view, truncation) from the
cache entry's JSON. Default cases: every case of the config's main source, then the first case of each phantom kind
of ``data.extra_sources``.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from .data import SimulatedCBCTLoader, case_loaders
from .data.cbct_cache import CBCTCache, cache_key, make_settings
from .evaluate_figure import central_slices

__all__ = ["cbct_figure", "choose_cases", "main"]

SPLITS = ("train", "val", "test")
DIFF_CMAP = "RdBu_r"


def choose_cases(data: dict[str, Any], cases: list[str] | None = None) -> list[tuple[str, str, Any]]:
    """``(case, split, loader)`` to draw, from the splits of a ``data`` config section.

    Args:
        data: the run config's ``data``.
        cases: these case ids, in this order; default: every case of the main source, then the first of each
            kind of the extra sources (the id without its trailing number: ``phantom-head``, ``phantom-pelvis``).

    Raises:
        ValueError: a listed case is not in the config, or the config simulates no CBCT.
    """
    found = {case: (split, load) for split in SPLITS for case, load in case_loaders(data, split)}
    if not any(isinstance(load, SimulatedCBCTLoader) for _, load in found.values()):
        raise ValueError("the config has no data.cbct_simulation: no CBCT is simulated")
    if cases is None:
        main = [case for split in SPLITS for case, _ in case_loaders({**data, "extra_sources": None}, split)]
        kinds: dict[str, str] = {}
        for case in found:
            if case not in main:
                kinds.setdefault(re.sub(r"[-_]?\d+$", "", case), case)
        cases = [*sorted(main), *kinds.values()]
    missing = [case for case in cases if case not in found]
    if missing:
        raise ValueError(f"no case {', '.join(missing)} in the config; it has: {', '.join(sorted(found))}")
    return [(case, *found[case]) for case in cases if isinstance(found[case][1], SimulatedCBCTLoader)]


def _describe(case: str, split: str, metadata: dict[str, Any]) -> str:
    settings = metadata.get("settings", {})
    fov = metadata.get("field_of_view_mm", {})
    mas = settings.get("mas")
    parts = [
        "half fan" if settings.get("half_fan") else "full fan",
        f"{mas:g} mAs" if mas else "noise-free",
        f"{settings.get('views')} views",
        f"scatter/primary {settings.get('scatter_to_primary', 0):g}",
    ]
    if fov:
        parts.append(f"FOV ⌀{fov.get('diameter', 0) / 10:.0f} × {fov.get('length', 0) / 10:.0f} cm")
    parts.append("TRUNCATED (body wider than the FOV)" if metadata.get("truncated") else "not truncated")
    return f"{case} ({split}): " + ", ".join(parts)


def _load(loader: SimulatedCBCTLoader) -> dict[str, Any]:
    """The case's CT as simulated from, its CBCT and CT as the loader gives them, the FOV and the metadata."""
    import SimpleITK as sitk

    from MedTransCore.preprocess import body_mask

    images, _ = loader()  # through the cache: simulated and stored only if missing
    ct = loader.inner()[0]["CT"]
    key = cache_key(ct, make_settings(loader.settings))
    _, fov_path, meta_path = CBCTCache(loader.cache).paths(key)
    metadata = json.loads(meta_path.read_text())["metadata"]
    fov = sitk.ReadImage(str(fov_path), sitk.sitkUInt8)
    fov.CopyInformation(ct)
    mask = body_mask(ct, "CT")
    return {
        name: central_slices(image, mask)
        for name, image in {"ct": ct, "cbct": images["CBCT"], "ct_fov": images["CT"], "fov": fov}.items()
    } | {"metadata": metadata}


def cbct_figure(
    config: dict[str, Any],
    out: str | Path,
    *,
    cases: list[str] | None = None,
    window: tuple[float, float] = (1500.0, -200.0),
    difference: float = 300.0,
) -> dict[str, Any]:
    """Write the figure (see the module docstring) as a PNG, about 1100 px wide.

    Args:
        config: a run config with ``data.cbct_simulation``.
        out: the PNG to write.
        cases: case ids to draw (default: see :func:`choose_cases`).
        window: CT and CBCT display ``(width, level)`` HU.
        difference: the difference colour scale spans ``±difference`` HU.

    Returns:
        ``{"path", "cases": [...], "titles": [row titles]}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    chosen = choose_cases(config["data"], cases)
    loaded = [(case, split, _load(loader)) for case, split, loader in chosen]
    width, level = window
    vmin, vmax = level - width / 2, level + width / 2
    heights = []
    for _, _, slices in loaded:
        sx, sy, sz = slices["ct"].spacing
        axial, coronal = slices["ct"].axial, slices["ct"].coronal
        heights.append(
            max(axial.shape[0] * sy / (axial.shape[1] * sx), coronal.shape[0] * sz / (coronal.shape[1] * sx))
        )
    ratios = [1.75 * h + 0.45 for h in heights]
    fig = plt.figure(figsize=(11, sum(ratios) + 1.1), layout="constrained")
    *rows, legend = fig.subfigures(len(loaded) + 1, 1, height_ratios=[*ratios, 0.6])
    headers = ("CT axial", "simulated CBCT axial\n(SYNTHETIC)", "CBCT − CT axial", "CT coronal")
    headers += ("simulated CBCT coronal\n(SYNTHETIC)", "CBCT − CT coronal")
    titles = []
    for row, (subfigure, (case, split, slices)) in enumerate(zip(rows, loaded)):
        titles.append(_describe(case, split, slices["metadata"]))
        subfigure.suptitle(titles[-1], fontsize=8)
        axes = subfigure.subplots(1, 6)
        sx, sy, sz = slices["ct"].spacing
        for view in range(2):
            aspect = (sy if view == 0 else sz) / sx
            ct, cbct, ct_fov, fov = (slices[k][view] for k in ("ct", "cbct", "ct_fov", "fov"))
            diff = np.where(fov > 0, cbct - ct_fov, np.nan)
            for column, (array, cmap, limits) in enumerate(
                ((ct, "gray", (vmin, vmax)), (cbct, "gray", (vmin, vmax)), (diff, DIFF_CMAP, (-difference, difference)))
            ):
                ax = axes[3 * view + column]
                ax.imshow(array, cmap=cmap, vmin=limits[0], vmax=limits[1], aspect=aspect)
                ax.set_xticks([]), ax.set_yticks([])
                if column == 0 and fov.min() == 0:
                    ax.contour(fov > 0, levels=[0.5], colors="gold", linewidths=0.6, linestyles="dashed")
                if column == 2:
                    ax.set_facecolor("0.85")
                if row == 0:
                    ax.set_title(headers[3 * view + column], fontsize=7)
    for box, (cmap, low, high, label) in zip(
        ([0.1, 0.4, 0.3, 0.18], [0.6, 0.4, 0.3, 0.18]),
        (("gray", vmin, vmax, "CT and CBCT (HU)"), (DIFF_CMAP, -difference, difference, "CBCT − CT (HU)")),
    ):
        bar = legend.colorbar(
            ScalarMappable(Normalize(low, high), cmap), cax=legend.add_axes(box), orientation="horizontal"
        )
        bar.set_label(label, fontsize=7)
        bar.ax.xaxis.set_label_position("top")
        bar.ax.tick_params(labelsize=6)
    fig.suptitle(
        f"Simulated cone-beam CTs (RTK forward projection, scatter, noise, FDK): CT and CBCT W{width:g}/L{level:g} HU, "
        f"difference ±{difference:g} HU inside the field of view (dashed gold on the CT; grey: outside)",
        fontsize=8,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return {"path": out, "cases": [case for case, _, _ in loaded], "titles": titles}


def main(argv: list[str] | None = None) -> None:
    """``python -m medtrans_training.cbct_figure CONFIG --out PNG [--cases a,b] [--window W,L]``."""
    parser = argparse.ArgumentParser(prog="python -m medtrans_training.cbct_figure", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="run config with data.cbct_simulation")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--cases", help="comma-separated case ids (default: the main source's, one per phantom kind)")
    parser.add_argument("--window", default="1500,-200", help="CT display width,level in HU (default 1500,-200)")
    parser.add_argument("--difference", type=float, default=300.0, help="difference scale ±HU (default 300)")
    args = parser.parse_args(argv)
    from .config import load_config

    try:
        width, level = (float(v) for v in args.window.split(","))
    except ValueError:
        parser.error(f"--window must be WIDTH,LEVEL, got {args.window!r}")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else None
    try:
        drawn = cbct_figure(
            load_config(args.config), args.out, cases=cases, window=(width, level), difference=args.difference
        )
    except ValueError as exc:
        parser.exit(2, f"error: {exc}\n")
    print("\n".join([str(drawn["path"]), *drawn["titles"]]))


if __name__ == "__main__":
    main()
