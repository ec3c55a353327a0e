"""Iodine enhancement of the abdomen over time: one bolus per patient, sampled at the phase's scan time.

Each tissue follows a time-enhancement curve (HU above its unenhanced value) after the start of a standard
injection: about 1.5-2 mL/kg of 300-370 mgI/mL at 3-5 mL/s, i.e. 450-650 mgI/kg. A patient draws a dose
factor (iodine per kg, cardiac output) that scales every curve and the two scan times: the late arterial
(bolus-tracked, 32-38 s) and the portal-venous phase (65-80 s). An early or late scan moves the values along
the curves, towards the neighbouring phase, so the arterial images of two patients differ in more than level.

Curve values (the knots at 35 and 70 s are the arterial and portal-venous phase; the sources' numbers are
totals in HU unless marked as enhancement, dHU):

* Aorta: 250-350 HU in the (late) arterial phase, about 150-180 HU portal-venous; peak 30-40 s after
  the start of a 25-30 s injection (Bae KT, Radiology 2010;256:32-61).
* Liver: dual supply, ~25 % hepatic artery, so the arterial phase barely enhances it (+10-20 dHU); peak
  about +50-55 dHU portal-venous (100-130 HU): mean hepatic enhancement 50-55 dHU with 1.2 mL/kg of
  350 mgI/mL (PMID 33386915); >=50 dHU counts as adequate (J Pers Med 2021;11:1255).
* Portal vein: begins to enhance in the late arterial "portal inflow" phase (~25-35 s; ~80-130 HU assumed)
  and peaks portal-venous (150-200 HU); its opacification is greater in the pancreatic (40-70 s) than in the
  hepatic phase (Lu DS et al., Radiology 1996;199:697-701).
* Spleen: arciform (moire) heterogeneous enhancement in the arterial phase (~20-35 s), homogeneous from
  50-75 s; the levels (~120 HU arterial on average, 120-130 HU portal-venous) are assumed typical values.
* Kidneys: corticomedullary phase (25-70 s): cortex +195-217 dHU at the peak with 2 mL/kg 300 mgI/mL,
  cortex-medulla difference 110-140 HU early, below 30 HU from ~45 s after the bolus trigger (~65-70 s after
  the start); medulla +145 dHU at the nephrographic phase (80-180 s), homogeneous (three-phase renal MDCT
  with bolus tracking, 128 patients: PMID 17367973; phase timing: Yuh BI, Cohan RH, AJR 1999;173:747-755).
  The curves here peak lower (+160 dHU cortex) for the lower nominal dose.
* Pancreas: peaks in the pancreatic (late arterial, 35-45 s) phase, 100-150 HU, 108 HU in an arterial spiral
  CT series (PMID 7626748), less in the hepatic phase (Lu 1996); ~+60 dHU portal-venous assumed.
* Inferior vena cava at the renal level: mixes early-returning renal venous blood (~70-100 HU arterial),
  140-160 HU portal-venous; muscle +10-15 dHU, fat a few HU (assumed typical values).
* Liver metastasis (hypovascular, colorectal-like): thin rim, +20 dHU arterial, +40 dHU portal-venous:
  darker than the liver in every phase.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .tissues import Label as L
from .tissues import Tissue

# seconds after the start of the injection
KNOTS_S = (0.0, 20.0, 35.0, 50.0, 70.0, 100.0, 180.0)
# dHU at KNOTS_S (nominal dose); labels not listed do not enhance (air, lung, cortical bone, bile, CSF)
CURVES: dict[int, tuple[float, ...]] = {
    L.ARTERY: (0, 220, 260, 170, 130, 100, 70),  # aorta and its branches
    L.VEIN: (0, 5, 40, 90, 120, 110, 80),  # IVC, renal and hepatic veins
    L.PORTAL_VEIN: (0, 10, 65, 130, 140, 120, 85),  # with the splenic and superior mesenteric veins
    L.LIVER: (0, 5, 15, 40, 55, 52, 38),
    L.SPLEEN: (0, 40, 72, 78, 75, 62, 45),
    L.KIDNEY_CORTEX: (0, 110, 160, 155, 148, 140, 110),
    L.KIDNEY_MEDULLA: (0, 10, 45, 95, 128, 145, 150),
    L.PANCREAS: (0, 40, 80, 75, 60, 45, 30),
    L.LESION: (0, 5, 20, 35, 40, 40, 35),
    L.BOWEL: (0, 8, 15, 25, 30, 28, 20),  # wall and mixed content
    L.MUSCLE: (0, 3, 8, 12, 15, 15, 12),
    L.SKIN: (0, 5, 10, 15, 20, 20, 15),
    L.CANCELLOUS_BONE: (0, 8, 15, 20, 25, 25, 20),  # marrow
    L.FAT: (0, 0, 1, 2, 3, 3, 2),
}
# Anatomies whose enhancement follows these curves (the others keep their tissues' fixed phase values).
BOLUS_ANATOMIES = ("abdomen",)
# Per-patient ranges: dose factor; scan times (s) of the late arterial and the portal-venous phase.
DOSE = (0.9, 1.1)
ARTERIAL_S = (32.0, 38.0)
VENOUS_S = (65.0, 80.0)
# Arciform splenic enhancement: relative amplitude of the bands, full up to 35 s, gone by 55 s.
SPLEEN_BANDS, SPLEEN_BANDS_S = 0.5, (35.0, 55.0)


def enhancement(label: int, seconds: float) -> float:
    """Nominal-dose enhancement (dHU) of ``label`` ``seconds`` after the start of the injection."""
    curve = CURVES.get(int(label))
    return 0.0 if curve is None else float(np.interp(seconds, KNOTS_S, curve))


@dataclass(frozen=True)
class Bolus:
    """One patient's contrast injection as the scanner saw it.

    Args:
        dose: factor on every curve (iodine dose per kg, cardiac output).
        arterial_s: scan time of the arterial phase (s after the start of the injection).
        venous_s: scan time of the portal-venous phase (s).
    """

    dose: float
    arterial_s: float
    venous_s: float

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Bolus:
        """A patient's bolus: dose factor and the two scan times, uniform over ``DOSE``, ``ARTERIAL_S``, ``VENOUS_S``."""
        return cls(float(rng.uniform(*DOSE)), float(rng.uniform(*ARTERIAL_S)), float(rng.uniform(*VENOUS_S)))

    def seconds(self, phase: str) -> float:
        """Scan time of ``phase`` (``"arterial"`` or ``"venous"``)."""
        return {"arterial": self.arterial_s, "venous": self.venous_s}[phase]

    def apply(self, tissues: dict[int, Tissue]) -> dict[int, Tissue]:
        """``tissues`` with their ``arterial`` and ``venous`` enhancement taken from the curves at this bolus."""
        return {
            label: dataclasses.replace(
                t,
                arterial=self.dose * enhancement(label, self.arterial_s),
                venous=self.dose * enhancement(label, self.venous_s),
            )
            for label, t in tissues.items()
        }

    def heterogeneity(self, labels: np.ndarray, bands: np.ndarray, phase: str | None) -> np.ndarray | None:
        """Additive HU of the arciform splenic pattern in ``phase`` (``None`` when there is none).

        Args:
            labels: uint8 label map (z, y, x).
            bands: unit-variance smooth noise (z, y, x); its sine makes the alternating bands (zero mean).
            phase: ``None``, ``"arterial"`` or ``"venous"``.
        """
        if phase is None:
            return None
        t = self.seconds(phase)
        fade = float(np.clip((SPLEEN_BANDS_S[1] - t) / (SPLEEN_BANDS_S[1] - SPLEEN_BANDS_S[0]), 0.0, 1.0))
        if fade == 0.0:
            return None
        amplitude = np.float32(SPLEEN_BANDS * fade * self.dose * enhancement(L.SPLEEN, t))
        return np.where(labels == L.SPLEEN, amplitude * np.sin(np.float32(2.5) * bands), np.float32(0))

    def info(self) -> dict[str, float]:
        """JSON-ready parameters."""
        return {
            "dose_factor": round(self.dose, 3),
            "arterial_s": round(self.arterial_s, 1),
            "venous_s": round(self.venous_s, 1),
        }
