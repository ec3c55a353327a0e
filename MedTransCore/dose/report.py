"""Files of a dose check: both doses, their difference, the gamma map, ``dose_report.png`` and ``dose.json``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from matplotlib.figure import Figure

from ..io.staging import StagedOutputs
from ..io.writing import write_image
from .check import DoseCheck
from .dvh import DVH_METRICS, dvh_curve

#: File names in the output folder.
FILES = {
    "ct_dose": "ct_dose.nii.gz",
    "sct_dose": "sct_dose.nii.gz",
    "difference": "dose_difference.nii.gz",
    "gamma": "gamma_2pct_2mm.nii.gz",
    "structures": "structures.nii.gz",
    "report": "dose_report.png",
    "json": "dose.json",
}
#: Value of the gamma file's voxels below the low-dose threshold (not evaluated).
GAMMA_NOT_EVALUATED = -1.0
_DESCRIPTIONS = {
    "ct_dose": "MedTrans dose (Gy) on the real CT",
    "sct_dose": "MedTrans dose (Gy) on SYNTHETIC CT",
    "difference": "MedTrans dose on SYNTHETIC CT minus CT (Gy)",
    "gamma": "MedTrans gamma 2%/2mm, SYNTHETIC CT vs CT (-1: not evaluated)",
}


def write_dose_outputs(check: DoseCheck, folder: Path, *, outputs: StagedOutputs | None = None) -> dict[str, Path]:
    """Write every file of :data:`FILES` into ``folder``; returns ``{key: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    images = {
        "ct_dose": check.pair.ct_dose,
        "sct_dose": check.pair.sct_dose,
        "difference": check.difference,
        "gamma": gamma_for_file(check.gamma),
    }
    paths = {}
    for key, image in images.items():
        synthetic = key != "ct_dose"
        metadata = {"descrip": _DESCRIPTIONS[key], "MedTrans_Quantity": _DESCRIPTIONS[key]}
        paths[key] = write_image(
            image, folder / FILES[key], overwrite=True, metadata=metadata, synthetic=synthetic, outputs=outputs
        )
    paths["structures"] = write_image(
        structure_labels(check),
        folder / FILES["structures"],
        overwrite=True,
        metadata={"descrip": "MedTrans dose check structures (labels in dose.json)"},
        synthetic=False,
        outputs=outputs,
    )
    paths["report"] = folder / FILES["report"]
    dose_figure(check).savefig(paths["report"], dpi=110)
    paths["json"] = folder / FILES["json"]
    paths["json"].write_text(json.dumps(check.summary(), indent=1), encoding="utf-8")
    return paths


def gamma_for_file(gamma: sitk.Image) -> sitk.Image:
    """The gamma map with :data:`GAMMA_NOT_EVALUATED` where gamma was not evaluated (NaN in memory): files stay
    finite, and gamma itself is never negative."""
    array = sitk.GetArrayFromImage(gamma)
    out = sitk.GetImageFromArray(np.where(np.isnan(array), GAMMA_NOT_EVALUATED, array).astype(np.float32))
    out.CopyInformation(gamma)
    return out


def structure_labels(check: DoseCheck) -> sitk.Image:
    """The structures as one uint8 label map on the CT grid (labels as in ``dose.json``'s ``structure_labels``);
    where structures overlap, the earlier one (the target first) keeps the voxel."""
    labels = np.zeros(sitk.GetArrayViewFromImage(check.pair.ct_dose).shape, dtype=np.uint8)
    for name, label in reversed(list(check.structure_labels().items())):
        labels[sitk.GetArrayViewFromImage(check.pair.structures[name]) > 0] = label
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(check.pair.ct_dose)
    return image


def dose_figure(check: DoseCheck) -> Figure:
    """CT and sCT with their dose colour wash, the dose difference and the gamma map through the target's centre,
    the DVH curves of every structure, and the target's DVH metrics."""
    pair = check.pair
    ct_dose, sct_dose = sitk.GetArrayFromImage(pair.ct_dose), sitk.GetArrayFromImage(pair.sct_dose)
    target = sitk.GetArrayFromImage(pair.structures["TARGET"]) > 0
    z = int(round(np.argwhere(target)[:, 0].mean()))
    ct, sct = sitk.GetArrayFromImage(pair.ct), sitk.GetArrayFromImage(pair.sct)
    top = max(float(ct_dose.max()), 1e-6)
    fig = Figure(figsize=(13, 8.2), layout="constrained")
    axes = fig.subplots(2, 3)
    title = "Dose check: one plan on the CT, the same fluence on the SYNTHETIC CT"
    if pair.test_plan:
        title += " (TEST PLAN: a spherical target placed by MedTrans, not a clinical plan)"
    fig.suptitle(title, fontsize=11)
    for ax, (name, image, dose) in zip(axes[0, :2], (("CT", ct, ct_dose), ("synthetic CT", sct, sct_dose))):
        ax.imshow(image[z], cmap="gray", vmin=-200, vmax=300)
        wash = np.ma.masked_less(dose[z], 0.1 * top)
        shown = ax.imshow(wash, cmap="turbo", vmin=0, vmax=top, alpha=0.5)
        ax.contour(target[z], levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"dose on the {name} (max {dose.max():.1f} Gy)", fontsize=9)
        ax.axis("off")
    fig.colorbar(shown, ax=axes[0, :2], shrink=0.8, label="Gy")
    limit = 0.05 * top
    diff = axes[0, 2].imshow(sct_dose[z] - ct_dose[z], cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[0, 2].set_title("sCT dose - CT dose", fontsize=9)
    axes[0, 2].axis("off")
    fig.colorbar(diff, ax=axes[0, 2], shrink=0.8, label="Gy (±5 % of max)")
    _gamma_panel(axes[1, 0], check, z)
    _dvh_panel(axes[1, 1], check, ct_dose, sct_dose)
    _dvh_table(axes[1, 2], check)
    return fig


def _gamma_panel(ax, check: DoseCheck, z: int) -> None:
    point = check.pair.ct_dose.TransformIndexToPhysicalPoint((0, 0, z))
    gz = check.gamma.TransformPhysicalPointToIndex(point)[2]
    gamma = sitk.GetArrayViewFromImage(check.gamma)
    gz = int(np.clip(gz, 0, gamma.shape[0] - 1))
    shown = ax.imshow(np.ma.masked_invalid(gamma[gz]), cmap="RdYlGn_r", vmin=0, vmax=2)
    rates = ", ".join(f"{k} {v:.1f} %" for k, v in check.pass_rates.items())
    ax.set_title(f"gamma 2%/2mm (pass: gamma <= 1)\n{rates}", fontsize=8)
    ax.axis("off")
    ax.figure.colorbar(shown, ax=ax, shrink=0.8)


def _dvh_panel(ax, check: DoseCheck, ct_dose: np.ndarray, sct_dose: np.ndarray) -> None:
    top = float(max(ct_dose.max(), sct_dose.max(), 1e-6))
    bins = np.linspace(0.0, top * 1.02, 200)
    for colour, (name, mask) in zip(("C3", "C0", "C2", "C4", "C5", "C6", "C7"), check.pair.structures.items()):
        inside = sitk.GetArrayViewFromImage(mask) > 0
        for dose, style, label in ((ct_dose, "-", f"{name} CT"), (sct_dose, "--", f"{name} sCT")):
            edges, volume = dvh_curve(dose, inside, bins)
            ax.plot(edges, volume, style, color=colour, label=label, linewidth=1.2)
    ax.set_xlabel("dose (Gy)")
    ax.set_ylabel("volume (%)")
    ax.set_title("dose-volume histograms (solid CT, dashed sCT)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _dvh_table(ax, check: DoseCheck) -> None:
    ax.axis("off")
    rows = []
    for structure, metrics in check.dvh.items():
        for metric in DVH_METRICS:
            value = metrics[metric]
            rows.append([structure, metric, f"{value['ct']:.2f}", f"{value['sct']:.2f}", f"{value['difference']:+.2f}"])
    table = ax.table(cellText=rows, colLabels=["structure", "", "CT (Gy)", "sCT (Gy)", "sCT - CT"], loc="upper center")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.1)
    ax.set_title("DVH metrics", fontsize=9)
