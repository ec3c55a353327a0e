"""The dose check of a synthetic CT: one plan on the CT, its fluence on the sCT, then gamma and DVH differences.

This is what ``medtrans dose``, the Slicer module and the browser share. :func:`run_dose_check` returns the dose
volumes, the 2%/2mm gamma map and :meth:`DoseCheck.summary`, the content of ``dose.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import SimpleITK as sitk

from .dvh import compare_dvh
from .engine import DosePair, Plan, ProgressFn, plan_and_recompute, recompute
from .gamma import CRITERIA, gamma_pass_rates

#: Doses below this percentage of the CT plan's maximum are not evaluated by gamma (SynthRAD's convention).
GAMMA_CUTOFF_PERCENT = 10.0


@dataclass
class DoseCheck:
    """Both doses, their difference and the gamma analysis of the sCT dose against the CT dose.

    Attributes:
        pair: the doses and structures (:class:`~.engine.DosePair`), on the CT's grid.
        difference: sCT dose minus CT dose (Gy).
        gamma: 2%/2mm gamma index on the gamma grid (the dose grid's spacing over the CT's extent); NaN where the
            CT dose is below the low-dose threshold.
        pass_rates: ``{"1%/1mm": %, "2%/2mm": %, "3%/3mm": %}``.
        dvh: ``{structure: {metric: {"ct", "sct", "difference"}}}`` in Gy.
    """

    pair: DosePair
    difference: sitk.Image
    gamma: sitk.Image
    pass_rates: dict[str, float]
    dvh: dict[str, dict[str, dict[str, float]]]

    def structure_labels(self) -> dict[str, int]:
        """``{structure: label}`` of ``structures.nii.gz``: 1, 2, ... in the order of ``pair.structures``."""
        return {name: index + 1 for index, name in enumerate(self.pair.structures)}

    def summary(self) -> dict:
        """The JSON report: pass rates (%), DVH metrics (Gy), the plan and how it was computed."""
        pair, settings = self.pair, self.pair.settings
        body = sitk.GetArrayViewFromImage(pair.structures["BODY"]) > 0
        difference = sitk.GetArrayViewFromImage(self.difference)[body]
        ct_max = float(sitk.GetArrayViewFromImage(pair.ct_dose).max())
        return {
            "gamma_pass_rate": self.pass_rates,
            "dvh": self.dvh,
            "gamma": {
                "criteria": list(self.pass_rates),
                "normalisation": "global (maximum of the CT plan's dose)",
                "low_dose_threshold_percent": GAMMA_CUTOFF_PERCENT,
                "grid_mm": list(self.gamma.GetSpacing()),
                "map": "2%/2mm",
                "map_not_evaluated_value": -1.0,
            },
            "dose_difference_gy": {
                "mean_absolute_in_body": float(np.abs(difference).mean()),
                "max_absolute_in_body": float(np.abs(difference).max()),
                "mean_in_body": float(difference.mean()),
            },
            "max_dose_gy": {"ct": ct_max, "sct": float(sitk.GetArrayViewFromImage(pair.sct_dose).max())},
            "plan": {
                "test_plan": pair.test_plan,
                "what": (
                    "test plan: a spherical target placed by MedTrans, not a clinical plan"
                    if pair.test_plan
                    else "plan on the given target"
                ),
                "engine": f"pyRadPlan {_version('pyRadPlan')} (photon pencil beam, machine 'Generic')",
                "gamma": f"pymedphys {_version('pymedphys')}",
                "beams": settings.beams,
                "gantry_angles": [round(angle, 2) for angle in settings.gantry_angles],
                "prescription_gy": settings.prescription_gy,
                "dose_grid_mm": settings.dose_grid_mm,
                "structures": list(pair.structures),
                "optimised_on": "CT; the same fluence recomputed on the synthetic CT",
            },
            "structure_labels": self.structure_labels(),
            "sct_grid": pair.grid_note or "same grid as the CT",
            "seconds": pair.seconds,
            "synthetic": "sct_dose is a dose computed on a SYNTHETIC CT",
        }


def run_dose_check(ct: sitk.Image, sct: sitk.Image, *, progress: ProgressFn | None = None, **plan_options) -> DoseCheck:
    """Plan on ``ct``, recompute on ``sct``, and compare (``plan_options``: those of
    :func:`~.engine.plan_and_recompute`: ``target``, ``target_centre_mm``, ``oars``, ``settings``, ``cancel``)."""
    return compare_doses(plan_and_recompute(ct, sct, progress=progress, **plan_options), progress)


def check_with_plan(plan: Plan, sct: sitk.Image, progress: ProgressFn | None = None) -> DoseCheck:
    """One more synthetic CT on a plan already made (:func:`~.engine.make_plan`): several candidates, one plan."""
    return compare_doses(recompute(plan, sct, progress=progress), progress)


def compare_doses(pair: DosePair, progress: ProgressFn | None = None) -> DoseCheck:
    """Gamma (on the dose grid) and DVH of the sCT dose against the CT dose."""
    if progress is not None:
        progress(0.92, "gamma analysis")
    reference, evaluated = (_on_gamma_grid(d, pair.settings.dose_grid_mm) for d in (pair.ct_dose, pair.sct_dose))
    rates, gamma = gamma_pass_rates(reference, evaluated, CRITERIA, cutoff_percent=GAMMA_CUTOFF_PERCENT)
    gamma_image = sitk.GetImageFromArray(gamma.astype(np.float32))
    gamma_image.CopyInformation(reference)
    if progress is not None:
        progress(0.97, "dose-volume histograms")
    structures = {name: sitk.GetArrayFromImage(mask) > 0 for name, mask in pair.structures.items()}
    dvh = compare_dvh(sitk.GetArrayFromImage(pair.ct_dose), sitk.GetArrayFromImage(pair.sct_dose), structures)
    difference = sitk.Subtract(pair.sct_dose, pair.ct_dose)
    return DoseCheck(pair=pair, difference=difference, gamma=gamma_image, pass_rates=rates, dvh=dvh)


def _on_gamma_grid(dose: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``dose`` resampled (linearly) onto an isotropic grid of ``spacing_mm`` over the same extent.

    Gamma on the CT's fine grid would cost minutes; the dose carries no detail finer than its own calculation grid,
    and pymedphys interpolates the evaluated dose finely between grid points anyway.
    """
    spacing = np.array(dose.GetSpacing())
    if np.all(spacing >= spacing_mm - 1e-6):
        return dose
    size = np.maximum(np.round(np.array(dose.GetSize()) * spacing / spacing_mm), 1).astype(int)
    reference = sitk.Image([int(v) for v in size], sitk.sitkFloat32)
    reference.SetSpacing([spacing_mm] * 3)
    reference.SetDirection(dose.GetDirection())
    # Same physical extent: the first voxel's corner stays where the dose's first voxel's corner is.
    direction = np.array(dose.GetDirection()).reshape(3, 3)
    corner = np.array(dose.GetOrigin()) - direction @ (spacing / 2)
    reference.SetOrigin(tuple(corner + direction @ (np.full(3, spacing_mm) / 2)))
    return sitk.Resample(dose, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
