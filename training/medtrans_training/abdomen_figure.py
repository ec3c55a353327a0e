"""The abdomen phantom next to a real abdomen CT: one axial slice each, and organ CT numbers and noise per phase.

    python -m medtrans_training.abdomen_figure --real /work/shared/data/ct/abdomen_ct_3mm.nii.gz \\
        --out docs/abdomen_phantom.png [--table docs/abdomen_phantom.md] [--seed 0] [--roi liver=z,y,x,r ...]

Panels: real CT | phantom non-contrast | arterial | portal-venous, all W400/L40, anterior up, the patient's right
on the left, drawn to the same mm scale. The phantom is drawn at the real scan's voxel size (3 mm, a 432 x 336 mm field of view: no shrinking to fit) and shown at
its mid slice (the renal hila); the real slice is the one of its organ ROIs.

The markdown table (printed, and written with ``--table``) gives the mean and SD (HU) per tissue:

* phantom: over the tissue's label after one erosion (no partial volume with the neighbours), whole volume;
  the SD there is quantum noise plus the tissue's texture, as an ROI on a patient measures it;
* real CT: over circular ROIs. Organ ROIs (liver, spleen, kidney, aorta, muscle) were placed by hand on the
  default scan (TotalSegmentator's example abdomen CT, non-contrast) and are approximate: they are drawn on the
  figure; for another scan give them with ``--roi``. Fat is found automatically (-190 to -30 HU, eroded twice).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["REAL_ROIS", "main", "phantom_stats", "real_stats"]

WINDOW = (-160.0, 240.0)  # W400 / L40
PHASES = {"CT": "non-contrast", "CT_ARTERIAL": "arterial", "CT_VENOUS": "portal-venous"}
# (z, y, x, radius) in voxels of the LPS-oriented array (z: inferior -> superior, y: anterior -> posterior,
# x: right -> left), placed by hand on abdomen_ct_3mm.nii.gz (slices 93-95, the renal hila).
REAL_ROIS: dict[str, dict[str, list[tuple[int, int, int, int]]]] = {
    "abdomen_ct_3mm": {
        "liver": [(94, 47, 22, 4)],
        "spleen": [(94, 56, 108, 3)],
        "kidney": [(94, 63, 38, 2)],
        "aorta": [(94, 51, 67, 1)],
        "muscle": [(94, 84, 50, 3), (94, 84, 76, 3)],
    }
}
TISSUES = ("liver", "spleen", "kidney", "medulla", "aorta", "fat", "muscle")
# Literature CT numbers (HU): non-contrast / arterial / portal-venous (sources: MedTransCore/phantoms/contrast.py).
LITERATURE = {
    "liver": "55-65 / 60-80 / 100-130",
    "spleen": "40-50 / ~120, banded / 120-130",
    "kidney": "30-50 / cortex 150-250 / 150-200",
    "medulla": "30-50 / 60-100 / within ~30 of the cortex",
    "aorta": "40-45 / 250-350 / 150-180",
    "fat": "-120 to -80 / +0-5 / +0-5",
    "muscle": "45-55 / +5-10 / +10-15",
}


def _label_of(tissue: str) -> int:
    from MedTransCore.phantoms import Label

    named = {"kidney": Label.KIDNEY_CORTEX, "medulla": Label.KIDNEY_MEDULLA, "aorta": Label.ARTERY}
    return named.get(tissue) or Label[tissue.upper()]


def phantom_stats(case) -> dict[str, dict[str, tuple[float, float]]]:
    """``{modality: {tissue: (mean, SD)}}`` over the eroded labels of a phantom case (all voxels if erosion leaves
    fewer than 20)."""
    labels = sitk.GetArrayFromImage(case.labels)
    out: dict[str, dict[str, tuple[float, float]]] = {key: {} for key in PHASES}
    for tissue in TISSUES:
        mask = labels == _label_of(tissue)
        core = ndimage.binary_erosion(mask, np.ones((3, 3, 3)))
        region = core if core.sum() >= 20 else mask
        for key in PHASES:
            values = sitk.GetArrayFromImage(case.images[key])[region]
            out[key][tissue] = (float(values.mean()), float(values.std()))
    return out


def _disc(shape: tuple[int, ...], z: int, y: int, x: int, r: int) -> np.ndarray:
    zz, yy, xx = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return (np.abs(zz - z) <= 1) & ((yy - y) ** 2 + (xx - x) ** 2 <= r * r)


def real_stats(array: np.ndarray, rois: dict[str, list[tuple[int, int, int, int]]], z: int) -> dict:
    """``{tissue: (mean, SD)}`` of the real CT: ROI discs over three slices; fat automatic around slice ``z``."""
    out = {}
    for tissue, discs in rois.items():
        mask = np.zeros(array.shape, bool)
        for disc in discs:
            mask |= _disc(array.shape, *disc)
        out[tissue] = (float(array[mask].mean()), float(array[mask].std()))
    slab = np.zeros(array.shape, bool)
    slab[max(z - 1, 0) : z + 2] = True
    fat = ndimage.binary_erosion((array > -190) & (array < -30), np.ones((1, 3, 3)), iterations=2) & slab
    out["fat"] = (float(array[fat].mean()), float(array[fat].std()))
    return out


def markdown(real: dict, phantom: dict, real_name: str, seed: int, contrast: dict) -> str:
    """The table: rows tissues, columns real CT and the phantom's three phases, then the literature."""

    def cell(stats: dict, tissue: str) -> str:
        return f"{stats[tissue][0]:.0f} ± {stats[tissue][1]:.0f}" if tissue in stats else "n/a"

    head = f"| tissue | real CT ({real_name}) | " + " | ".join(f"phantom {p}" for p in PHASES.values())
    lines = [head + " | literature (non-contrast / arterial / venous) |", "|---" * 6 + "|"]
    for tissue in TISSUES:
        cells = [cell(real, tissue), *(cell(phantom[key], tissue) for key in PHASES)]
        lines.append(f"| {tissue} | " + " | ".join(cells) + f" | {LITERATURE[tissue]} |")
    bolus = (
        f"dose factor {contrast['dose_factor']}, arterial scan {contrast['arterial_s']} s, "
        f"portal-venous scan {contrast['venous_s']} s"
    )
    notes = [
        "",
        f"Mean ± SD in HU. Phantom: abdomen seed {seed} at 3 mm ({bolus}), over each tissue's label eroded by one "
        "voxel, away from partial volume (kidney: the renal cortex; medulla: the renal pyramids); the SD is quantum "
        "noise plus tissue texture.",
        "Real CT: a non-contrast scan; liver, spleen, kidney, aorta and muscle ROIs are discs placed by hand "
        "(approximate, drawn on the figure; the kidney disc mixes cortex and medulla, which do not differ without "
        "contrast), fat is every voxel of -190 to -30 HU near the shown slice; no ROI on the medulla (n/a).",
    ]
    return "\n".join(lines + notes) + "\n"


def _show(ax, image: np.ndarray, spacing: tuple[float, float], title: str, view: tuple[float, float]) -> None:
    """``image`` in mm, centred on its body (HU > -500), in a ``view`` (width, height) mm window shared by all panels."""
    h, w = image.shape
    ax.imshow(image, cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1], extent=(0, w * spacing[0], h * spacing[1], 0))
    ys, xs = np.nonzero(image > -500)
    cx = (xs.min() + xs.max() + 1) / 2 * spacing[0] if xs.size else w * spacing[0] / 2
    cy = (ys.min() + ys.max() + 1) / 2 * spacing[1] if ys.size else h * spacing[1] / 2
    ax.set_xlim(cx - view[0] / 2, cx + view[0] / 2)
    ax.set_ylim(cy + view[1] / 2, cy - view[1] / 2)
    ax.set_facecolor("black")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=10)


def abdomen_figure(real_path: str | Path, out: str | Path, seed: int = 0, rois: dict | None = None) -> str:
    """Draw the figure to ``out``; returns the markdown table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    from MedTransCore.phantoms import generate_phantom

    real_image = sitk.DICOMOrient(sitk.ReadImage(str(real_path), sitk.sitkFloat32), "LPS")
    real = sitk.GetArrayFromImage(real_image)
    name = Path(real_path).name.split(".")[0]
    rois = rois if rois is not None else REAL_ROIS.get(name, {})
    z = int(np.median([d[0] for discs in rois.values() for d in discs])) if rois else real.shape[0] // 2
    spacing = real_image.GetSpacing()
    case = generate_phantom("abdomen", seed=seed, shape=(144, 112, 64), spacing=tuple(spacing), modalities=list(PHASES))
    table = markdown(real_stats(real, rois, z), phantom_stats(case), name, seed, case.info["contrast"])
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    view = (real.shape[2] * spacing[0], real.shape[1] * spacing[1])
    _show(axes[0], real[z], spacing[:2], f"real CT ({name}, slice {z}), non-contrast", view)
    for discs in rois.values():
        for _z, y, x, r in discs:
            axes[0].add_patch(
                Circle(
                    ((x + 0.5) * spacing[0], (y + 0.5) * spacing[1]),
                    (r + 0.5) * spacing[0],
                    fill=False,
                    color="#ffcc00",
                    lw=1,
                )
            )
    mid = case.labels.GetSize()[2] // 2
    c = case.info["contrast"]
    times = {"CT": "", "CT_ARTERIAL": f", {c['arterial_s']:.0f} s", "CT_VENOUS": f", {c['venous_s']:.0f} s"}
    for ax, (key, phase) in zip(axes[1:], PHASES.items(), strict=True):
        image = sitk.GetArrayFromImage(case.images[key])[mid]
        _show(ax, image, spacing[:2], f"phantom seed {seed}: {phase}{times[key]}", view)
    fig.suptitle("Abdomen: real CT vs phantom (W400/L40, same mm scale; yellow: real-CT ROIs)", fontsize=11)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return table


def _roi(text: str) -> tuple[str, tuple[int, int, int, int]]:
    name, _, values = text.partition("=")
    try:
        z, y, x, r = (int(v) for v in values.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--roi takes TISSUE=z,y,x,r (voxels of the LPS array), got {text!r}"
        ) from None
    return name.strip(), (z, y, x, r)


def main(argv: list[str] | None = None) -> None:
    """``python -m medtrans_training.abdomen_figure --real CT --out PNG [--table MD] [--seed N] [--roi ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m medtrans_training.abdomen_figure", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--real", required=True, help="a real abdomen CT in HU")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--table", help="also write the markdown table here")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (default 0)")
    parser.add_argument("--roi", type=_roi, action="append", help="TISSUE=z,y,x,r: a real-CT ROI (repeatable)")
    args = parser.parse_args(argv)
    rois = None
    if args.roi:
        rois = {}
        for tissue, disc in args.roi:
            rois.setdefault(tissue, []).append(disc)
    table = abdomen_figure(args.real, args.out, seed=args.seed, rois=rois)
    if args.table:
        figure = os.path.relpath(Path(args.out).resolve(), Path(args.table).resolve().parent)
        head = f"# Abdomen phantom vs a real abdomen CT\n\n![real CT and phantom phases]({figure})\n\n"
        command = "python -m medtrans_training.abdomen_figure " + " ".join(argv if argv is not None else sys.argv[1:])
        Path(args.table).write_text(head + table + f"\nMade with `{command}`.\n")
    print(table, end="")


if __name__ == "__main__":
    main()
