"""Dose check of a synthetic CT: plan on the CT with pyRadPlan, recompute on the sCT, compare (gamma, DVH)."""

from .check import DoseCheck, run_dose_check
from .engine import DoseCancelled, DosePair, PlanSettings, plan_and_recompute

__all__ = ["DoseCancelled", "DoseCheck", "DosePair", "PlanSettings", "plan_and_recompute", "run_dose_check"]
