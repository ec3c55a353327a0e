"""Tissue labels and their physical properties: CT number, MR relaxation at 1.5 T, contrast uptake.

Values are typical adult literature values; where no single reference exists the value is marked as
assumed. Sources (1.5 T unless noted):

* [Lu05] Lu H et al., J Magn Reson Imaging 2005;22:13-22 (brain T1: WM 646, GM 1197, CSF 4070 ms).
* [St05] Stanisz GJ et al., Magn Reson Med 2005;54:507-512 (WM T2 72, GM T2 95, muscle 1008/44,
  blood 1441/290 ms).
* [dB04] de Bazelaire CMJ et al., Radiology 2004;230:652-659 (1.5 T column: prostate 1317/88,
  myometrium 1309/117, vertebral marrow 549/49 ms).
* [Go04] Gold GE et al., AJR 2004;183:343-351 (subcutaneous fat 288/165 ms; the spin-echo-train T2
  that makes fat bright on T2 TSE).
* [Ne06] Neeb H et al., NeuroImage 2006;31:1156-1168 (water content: WM 0.69, GM 0.80).
* [Re05] Reichert ILH et al., Magn Reson Imaging 2005;23:611-618 (cortical bone T2* ~0.4-0.5 ms).
* CT numbers: standard radiology tables (air -1000, fat -100, water 0, CSF 0-15, WM 20-30, GM 35-45,
  blood 40-45, muscle 45-55, cancellous bone 300-400, cortical bone 1000-1800 HU).
* Contrast: iodinated CT arterial phase vessels 250-350 HU, portal-venous 150-180 HU; gadolinium
  concentrations in tissue (mM) are assumed typical values for a delayed T1c. The abdomen's iodine
  enhancement follows time-enhancement curves instead (``contrast.py``, with its sources).
* [dB04] also gives the abdominal organs (1.5 T): liver 586/46, spleen 1057/79, renal cortex 966/87,
  renal medulla 1412/85, pancreas 584/46 ms.
* Abdominal CT numbers, unenhanced (radiology reference texts): liver 50-70 HU, about 10 HU above the
  spleen; kidney 30-50 HU; pancreas 40-50 HU (less with fatty replacement); bile 0-20 HU; aerated lung
  bases -800 to -900 HU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Label(IntEnum):
    """Tissue labels shared by every anatomy (a label map holds the subset its anatomy uses)."""

    BACKGROUND = 0
    SKIN = 1
    FAT = 2
    MUSCLE = 3
    CORTICAL_BONE = 4
    CANCELLOUS_BONE = 5
    CSF = 6
    GREY_MATTER = 7
    WHITE_MATTER = 8
    ARTERY = 9
    VEIN = 10
    AIR_CAVITY = 11
    LESION = 12
    NECROSIS = 13
    OEDEMA = 14
    EYE = 15
    URINE = 16
    PROSTATE = 17
    UTERUS = 18
    RECTUM = 19
    BOWEL = 20
    LIVER = 21
    SPLEEN = 22
    KIDNEY_CORTEX = 23
    KIDNEY_MEDULLA = 24
    PORTAL_VEIN = 25
    PANCREAS = 26
    GALLBLADDER = 27
    LUNG = 28


@dataclass(frozen=True)
class Tissue:
    """Physical properties of one tissue.

    Args:
        hu: non-contrast CT number (HU).
        hu_texture: standard deviation (HU) of the smooth within-tissue heterogeneity.
        t1, t2: relaxation times at 1.5 T (ms).
        pd: proton density relative to water.
        texture: relative MR heterogeneity (fraction of the signal).
        gd: gadolinium concentration in the T1c (mM).
        arterial, venous: iodine enhancement (HU added) in the arterial and portal-venous phase.
    """

    hu: float
    hu_texture: float
    t1: float
    t2: float
    pd: float
    texture: float = 0.03
    gd: float = 0.0
    arterial: float = 0.0
    venous: float = 0.0


_T = Tissue
TISSUES: dict[Label, Tissue] = {
    Label.BACKGROUND: _T(hu=-1000, hu_texture=0, t1=1.0, t2=1.0, pd=0.0, texture=0.0),
    # Skin (dermis): assumed soft-tissue values close to muscle.
    Label.SKIN: _T(hu=40, hu_texture=4, t1=900, t2=45, pd=0.75, gd=0.15, arterial=10, venous=20),
    Label.FAT: _T(hu=-100, hu_texture=8, t1=288, t2=165, pd=0.90, texture=0.05, gd=0.01, venous=3),  # [Go04]
    Label.MUSCLE: _T(hu=50, hu_texture=4, t1=1008, t2=44, pd=0.78, gd=0.10, arterial=10, venous=20),  # [St05]
    Label.CORTICAL_BONE: _T(hu=1500, hu_texture=90, t1=250, t2=0.5, pd=0.15),  # [Re05]
    Label.CANCELLOUS_BONE: _T(
        hu=350, hu_texture=40, t1=549, t2=49, pd=0.80, texture=0.06, gd=0.10, arterial=15, venous=25
    ),  # [dB04] marrow
    Label.CSF: _T(hu=8, hu_texture=2, t1=4070, t2=2000, pd=1.00, texture=0.01),  # [Lu05]; T2 assumed (free water)
    Label.GREY_MATTER: _T(hu=40, hu_texture=3, t1=1197, t2=95, pd=0.80, gd=0.03, arterial=4, venous=6),  # [Lu05][St05]
    Label.WHITE_MATTER: _T(hu=28, hu_texture=3, t1=646, t2=72, pd=0.69, gd=0.02, arterial=2, venous=3),  # [Lu05][St05]
    # Blood [St05]; venous T2 shortened by deoxyhaemoglobin (assumed 180 ms).
    Label.ARTERY: _T(hu=42, hu_texture=2, t1=1441, t2=290, pd=0.90, texture=0.01, gd=1.0, arterial=290, venous=130),
    Label.VEIN: _T(hu=40, hu_texture=2, t1=1441, t2=180, pd=0.90, texture=0.01, gd=1.0, arterial=40, venous=130),
    Label.AIR_CAVITY: _T(hu=-1000, hu_texture=5, t1=1.0, t2=1.0, pd=0.0, texture=0.0),
    # Enhancing tumour (glioma-like, assumed): prolonged T1/T2, blood-brain-barrier leak.
    Label.LESION: _T(hu=36, hu_texture=4, t1=1350, t2=130, pd=0.85, gd=0.45, arterial=30, venous=45),
    Label.NECROSIS: _T(hu=15, hu_texture=3, t1=2500, t2=500, pd=0.95, texture=0.02),  # fluid-like core (assumed)
    Label.OEDEMA: _T(hu=18, hu_texture=3, t1=1250, t2=180, pd=0.88, gd=0.02, venous=3),  # vasogenic (assumed)
    Label.EYE: _T(hu=10, hu_texture=2, t1=3800, t2=1500, pd=0.98, texture=0.01),  # vitreous: near water (assumed)
    Label.URINE: _T(hu=5, hu_texture=2, t1=3000, t2=1100, pd=0.98, texture=0.01),  # near water (assumed)
    Label.PROSTATE: _T(hu=40, hu_texture=4, t1=1317, t2=88, pd=0.80, gd=0.25, arterial=25, venous=40),  # [dB04]
    Label.UTERUS: _T(hu=45, hu_texture=4, t1=1309, t2=117, pd=0.82, gd=0.35, arterial=60, venous=80),  # [dB04]
    # Rectum and bowel: wall and mixed content (assumed; bowel content is more fluid).
    Label.RECTUM: _T(hu=38, hu_texture=6, t1=1000, t2=60, pd=0.75, texture=0.05, gd=0.20, arterial=20, venous=35),
    Label.BOWEL: _T(hu=25, hu_texture=8, t1=1500, t2=150, pd=0.85, texture=0.08, gd=0.15, arterial=15, venous=30),
    # Abdominal organs: CT numbers from the ranges above, relaxation [dB04], proton density and the gadolinium of a
    # portal-venous T1c assumed; their iodine enhancement comes from contrast.py (arterial/venous are set there).
    Label.LIVER: _T(hu=60, hu_texture=4, t1=586, t2=46, pd=0.72, texture=0.04, gd=0.25),
    Label.SPLEEN: _T(hu=47, hu_texture=4, t1=1057, t2=79, pd=0.80, gd=0.30),
    Label.KIDNEY_CORTEX: _T(hu=33, hu_texture=4, t1=966, t2=87, pd=0.80, gd=0.60),
    Label.KIDNEY_MEDULLA: _T(hu=31, hu_texture=4, t1=1412, t2=85, pd=0.85, gd=0.45),
    Label.PORTAL_VEIN: _T(hu=40, hu_texture=2, t1=1441, t2=180, pd=0.90, texture=0.01, gd=1.0),  # blood, as VEIN
    Label.PANCREAS: _T(hu=45, hu_texture=6, t1=584, t2=46, pd=0.72, texture=0.05, gd=0.30),
    Label.GALLBLADDER: _T(hu=10, hu_texture=2, t1=2500, t2=600, pd=0.95, texture=0.01),  # bile (assumed)
    # Aerated lung (bases above the diaphragm): mostly air, a short T2 (assumed).
    Label.LUNG: _T(hu=-850, hu_texture=25, t1=1200, t2=30, pd=0.12, texture=0.10),
}
# A pelvic (prostate- or cervix-cancer-like) lesion: T2 darker than its gland, early wash-in, wash-out.
PELVIC_LESION = _T(hu=45, hu_texture=4, t1=1300, t2=75, pd=0.82, gd=0.45, arterial=70, venous=50)
# Lumbar vertebral bodies: trabecular bone of adults about 150-250 HU at L1 (Pickhardt PJ et al., Ann Intern Med
# 2013;158:588-595), less dense than the pelvic and skull bone marrow spaces above.
VERTEBRAL_BONE = dataclasses.replace(TISSUES[Label.CANCELLOUS_BONE], hu=210.0, hu_texture=30)
# A hypovascular liver metastasis (colorectal-like): darker than liver unenhanced and in every phase, T2 brighter.
LIVER_LESION = _T(hu=40, hu_texture=5, t1=1100, t2=90, pd=0.82, gd=0.20)

_COMMON = (Label.BACKGROUND, Label.SKIN, Label.FAT, Label.MUSCLE, Label.CORTICAL_BONE, Label.CANCELLOUS_BONE)
ANATOMY_LABELS: dict[str, tuple[Label, ...]] = {
    "head": _COMMON
    + (
        Label.CSF,
        Label.GREY_MATTER,
        Label.WHITE_MATTER,
        Label.ARTERY,
        Label.VEIN,
        Label.AIR_CAVITY,
        Label.LESION,
        Label.NECROSIS,
        Label.OEDEMA,
        Label.EYE,
    ),
    "pelvis": _COMMON
    + (
        Label.CSF,
        Label.ARTERY,
        Label.VEIN,
        Label.AIR_CAVITY,
        Label.LESION,
        Label.URINE,
        Label.PROSTATE,
        Label.UTERUS,
        Label.RECTUM,
        Label.BOWEL,
    ),
    "abdomen": _COMMON
    + (
        Label.CSF,
        Label.ARTERY,
        Label.VEIN,
        Label.AIR_CAVITY,
        Label.LESION,
        Label.BOWEL,
        Label.LIVER,
        Label.SPLEEN,
        Label.KIDNEY_CORTEX,
        Label.KIDNEY_MEDULLA,
        Label.PORTAL_VEIN,
        Label.PANCREAS,
        Label.GALLBLADDER,
        Label.LUNG,
    ),
}
# Tissues an anatomy has its own version of.
_OWN = {
    "pelvis": {Label.LESION: PELVIC_LESION},
    "abdomen": {Label.LESION: LIVER_LESION, Label.CANCELLOUS_BONE: VERTEBRAL_BONE},
}


def label_names(anatomy: str) -> dict[int, str]:
    """``{label value: lower-case name}`` of the labels ``anatomy`` uses."""
    return {int(label): label.name.lower() for label in ANATOMY_LABELS[anatomy]}


def tissue_table(anatomy: str) -> dict[int, Tissue]:
    """Nominal properties of the tissues of ``anatomy`` (the pelvis and the abdomen have their own lesions ...)."""
    table = {int(label): TISSUES[label] for label in ANATOMY_LABELS[anatomy]}
    table.update({int(label): t for label, t in _OWN.get(anatomy, {}).items()})
    return table


def sample_tissues(table: dict[int, Tissue], rng: np.random.Generator) -> dict[int, Tissue]:
    """One case's tissues: nominal values with small patient-to-patient and scan-to-scan variation.

    Soft-tissue CT numbers move by a few HU, bone by ~5 %, relaxation times by ~5 %, and the contrast
    bolus (vessel enhancement) by ~10 %, so a model never sees one fixed value per tissue.
    """
    bolus_arterial, bolus_venous = rng.uniform(0.85, 1.12), rng.uniform(0.9, 1.08)
    out = {}
    for label, t in table.items():
        if label in (Label.BACKGROUND, Label.AIR_CAVITY):
            out[label] = t
            continue
        hu_jitter = 0.05 * abs(t.hu) if abs(t.hu) > 200 else 2.5
        out[label] = dataclasses.replace(
            t,
            hu=t.hu + float(rng.uniform(-1, 1)) * hu_jitter,
            t1=t.t1 * float(rng.uniform(0.95, 1.05)),
            t2=t.t2 * float(rng.uniform(0.95, 1.05)),
            pd=t.pd * float(rng.uniform(0.97, 1.03)),
            arterial=t.arterial * bolus_arterial,
            venous=t.venous * bolus_venous,
        )
    return out


def lookup(
    table: dict[int, Tissue], field: str, extra: dict[int, float] | None = None, fill: float = 0.0
) -> np.ndarray:
    """A float32 look-up table ``lut[label] = table[label].<field>`` (+ ``extra[label]``) for ``lut[labels]``.

    Labels missing from ``table`` read ``fill``.
    """
    lut = np.full(max(Label) + 1, fill, dtype=np.float32)
    for label, t in table.items():
        lut[label] = getattr(t, field) + (extra or {}).get(label, 0.0)
    return lut


def as_dict(table: dict[int, Tissue]) -> dict[str, dict[str, float]]:
    """JSON-ready ``{label: {property: value}}`` of a tissue table (rounded)."""
    return {str(label): {k: round(float(v), 3) for k, v in dataclasses.asdict(t).items()} for label, t in table.items()}
