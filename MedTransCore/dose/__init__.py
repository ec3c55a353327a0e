"""Dose check of a synthetic CT: plan on the CT with pyRadPlan, recompute on the sCT, compare (gamma, DVH)."""

from .check import DoseCheck, check_with_plan, compare_doses, run_dose_check
from .engine import DoseCancelled, DosePair, Plan, PlanSettings, make_plan, plan_and_recompute, recompute

__all__ = [
    "DoseCancelled",
    "DoseCheck",
    "DosePair",
    "Plan",
    "PlanSettings",
    "check_with_plan",
    "compare_doses",
    "make_plan",
    "plan_and_recompute",
    "recompute",
    "run_dose_check",
]
