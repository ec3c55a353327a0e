"""Pelvis label map: skin, fat, muscle, hip bones, femora, sacrum, bladder, prostate or uterus, rectum, vessels.

Anatomical frame in mm (x: right -> left, y: anterior -> posterior, z: inferior -> superior); the
origin is at the level of the femoral heads, so the mid axial slice shows the hips, the bladder, the
prostate or cervix and the rectum. The body is open along z (a slab of the trunk and thighs).
"""

from __future__ import annotations

import numpy as np

from .shapes import (
    BIG,
    Blob,
    Canvas,
    Capsule,
    Cylinder,
    Ellipsoid,
    Intersection,
    Offset,
    Plane,
    Shape,
    Shell,
    Union,
    tube,
)
from .tissues import Label as L

HALF_EXTENT = (185.0, 125.0, float("inf"))
CENTRE = (0.0, 0.0, 0.0)
MAX_SHIFT = (10.0, 10.0, 10.0)
_SOFT = (L.FAT, L.MUSCLE)


def _bone(canvas: Canvas, shape: Shape, cortex_mm: float, core: int = L.CANCELLOUS_BONE) -> None:
    """A bone: cortical shell of ``cortex_mm`` around a ``core`` (cancellous bone or marrow fat)."""
    field = canvas.field(shape)
    canvas.paint(L.CORTICAL_BONE, field, where=_SOFT + (L.CANCELLOUS_BONE,))
    canvas.paint(core, field, hi=-cortex_mm, where=(L.CORTICAL_BONE,))


def _skeleton(canvas: Canvas, p: dict) -> None:
    """Hip bones (acetabulum, ilium, pubis, ischium), sacrum with coccyx, femora."""
    hx = p["hip_x"]
    for s in (-1, 1):
        head = (s * hx, -5, 0)
        acetabulum = Intersection(Ellipsoid(head, (34, 34, 34)), Plane((s * hx, -5, -8), (s * 1.0, 0.0, -1.0)))
        ilium = Union(
            Capsule((s * (hx - 2), -2, 24), (s * (hx + 5), 25, 55), 18),
            Ellipsoid((s * (hx + 14), 20, 68), (7, 55, 48), angles=(0, s * 32, s * 38)),
            Capsule((s * (hx - 28), 58, 72), (s * (hx - 38), 64, 40), 14),  # towards the sacroiliac joint
            k=10,
        )
        pubis = tube([(s * (hx - 10), -22, -6), (s * 13, -62, -20)], [12, 9])
        lower = tube([(s * 13, -60, -32), (s * 45, -25, -55), (s * (hx - 22), 22, -50)], [9, 8, 12])
        ischium = tube([(s * (hx - 6), 18, -8), (s * (hx - 22), 32, -45)], [16, 14])
        _bone(canvas, Union(acetabulum, ilium, *pubis, *lower, *ischium, k=8), 2.5)
        canvas.paint(L.MUSCLE, Ellipsoid(head, (25.5, 25.5, 25.5)), where=(L.CORTICAL_BONE, L.CANCELLOUS_BONE))
        neck_end = (s * (hx + 32), 2, -25)
        femur_top = Union(
            Ellipsoid(head, (23, 23, 23)),
            Capsule(head, neck_end, 15, 16),
            Ellipsoid((s * (hx + 40), 10, -22), (17, 20, 24)),  # greater trochanter
            k=6,
        )
        _bone(canvas, femur_top, 2.0)
        shaft = Capsule((s * (hx + 34), 6, -30), (s * (hx + 24), 10, -BIG / 10), 14)
        _bone(canvas, shaft, 5.0, core=L.FAT)  # cortical tube around a fatty medulla
    sacrum = Union(
        Ellipsoid((0, 68, 60), (46, 15, 42), angles=(25, 0, 0)),
        Ellipsoid((0, 80, 15), (26, 12, 28), angles=(15, 0, 0)),
        Capsule((0, 84, -8), (0, 74, -34), 8, 5),
        k=10,
    )
    _bone(canvas, sacrum, 2.0)
    for z0 in np.arange(112.0, 112.0 + 34.0 * 8, 34.0):  # lumbar vertebrae above the sacrum, discs between
        _bone(canvas, Cylinder((0, 38), (26, 19), (z0, z0 + 27)), 2.0)
        _bone(
            canvas, Union(Capsule((0, 62, z0 + 4), (0, 80, z0 + 4), 7), Cylinder((0, 60), (15, 13), (z0, z0 + 22))), 2.0
        )
        canvas.paint(
            L.CSF, Cylinder((0, 60), (9, 8), (z0 - 10, z0 + 40)), where=(L.CORTICAL_BONE, L.CANCELLOUS_BONE, L.MUSCLE)
        )


def _organs(canvas: Canvas, rng: np.random.Generator, p: dict) -> dict:
    """Bladder, prostate (male) or uterus (female), rectum with gas, pelvic fat; returns the gland centre."""
    canvas.paint(L.FAT, Ellipsoid((0, 0, 15), (48, 58, 62)), where=(L.MUSCLE,))  # true pelvis
    for s in (-1, 1):
        canvas.paint(L.FAT, Ellipsoid((s * 38, 42, -55), (26, 34, 34)), where=(L.MUSCLE,))  # ischiorectal fossa
        hx = p["hip_x"]
        canvas.paint(L.FAT, Ellipsoid((s * (hx - 12), -58, -25), (24, 16, 45)), where=(L.MUSCLE,))  # femoral triangle
        gluteal = Intersection(Shell(Ellipsoid((s * hx, 5, -5), (75, 62, 95)), 2.5), Plane((0, 12, 0), (0, -1, 0)))
        canvas.paint(L.FAT, gluteal, where=(L.MUSCLE,))  # fascial plane under gluteus maximus
    if p["sex"] == "male":
        gland = np.array([0.0, 2.0, -36.0])
        canvas.paint(L.PROSTATE, Ellipsoid(gland, np.array([21, 16, 18]) * p["gland_scale"]), where=_SOFT)
        for s in (-1, 1):
            canvas.paint(L.PROSTATE, Ellipsoid((s * 18, 22, -12), (16, 6, 7), angles=(0, 0, s * 20)), where=_SOFT)
    else:
        gland = np.array([0.0, 30.0, -6.0])  # cervix
        canvas.paint(L.UTERUS, Ellipsoid(gland, (16, 15, 20)), where=_SOFT)
        body = np.array([28, 20, 38]) * p["gland_scale"]
        canvas.paint(L.UTERUS, Ellipsoid((0, 18, 32), body, angles=(35, 0, 0)), where=_SOFT)
    f = p["bladder_fill"]
    bladder = Ellipsoid((0, -28, -20 + 30 * f), (44 * f, 32 * f, 30 * f))
    canvas.paint(L.MUSCLE, Offset(bladder, 3.0), where=_SOFT + (L.UTERUS, L.PROSTATE))  # bladder wall
    canvas.paint(L.URINE, bladder)
    rectum = tube([(0, 40, -80), (0, 44, -45), (0, 48, -10), (0, 46, 25), (-12, 40, 55)], [12, 15, 17, 16, 14])
    for piece in rectum:
        canvas.paint(L.RECTUM, piece, where=_SOFT + (L.CORTICAL_BONE, L.CANCELLOUS_BONE))
    if p["rectal_gas"]:
        gas_level = Plane((0, 48 + p["gas_level_mm"], 0), (0, 1, 0))  # supine: gas rises anteriorly
        for piece in rectum:
            canvas.paint(L.AIR_CAVITY, Intersection(Offset(piece, -4.0), gas_level), where=(L.RECTUM,))
    return gland


def _abdomen(canvas: Canvas, trunk: Shape, p: dict, rng: np.random.Generator) -> None:
    """Peritoneal fat behind a thin abdominal wall above the pelvic brim, with bowel loops (some gas)."""
    wall = Offset(trunk, -(14.0 + p["fat_mm"]))
    cavity = Intersection(wall, Plane((0, 0, 45), (0, 0.35, -1)), Plane((0, 25, 0), (0, 1, 0)))
    canvas.paint(L.FAT, Union(cavity, Ellipsoid((0, -25, 50), (62, 38, 30)), k=12), where=(L.MUSCLE,))
    for _ in range(int(rng.integers(9, 15))):
        points = [np.array([rng.uniform(-80, 80), rng.uniform(-60, 5), rng.uniform(50, 200)])]
        for _step in range(5):
            step = rng.normal(size=3)
            points.append(np.clip(points[-1] + 32 * step / np.linalg.norm(step), (-95, -75, 45), (95, 20, 230)))
        loop = tube(points, rng.uniform(10, 15))
        for piece in loop:
            canvas.paint(L.BOWEL, piece, where=(L.FAT,))
        if rng.uniform() < 0.5:
            level = Plane((0, points[0][1] + rng.uniform(-6, 2), 0), (0, 1, 0))
            for piece in loop:
                canvas.paint(L.AIR_CAVITY, Intersection(Offset(piece, -3.0), level), where=(L.BOWEL,))


def _vessels(canvas: Canvas, hx: float) -> None:
    """Aorta and IVC, common, external (to femoral) and internal iliac arteries and veins."""
    arteries = tube([(0, 5, BIG), (0, 5, 150)], 9)
    veins = tube([(-22, 10, BIG), (-22, 10, 150), (-8, 22, 135)], 10)
    for s in (-1, 1):
        ext = [(0, 5, 150), (s * 25, 18, 110), (s * 50, 10, 70), (s * (hx - 20), -20, 30), (s * (hx - 14), -50, 0)]
        ext += [(s * (hx - 10), -60, -30), (s * (hx - 5), -55, -100), (s * (hx + 5), -40, -BIG / 10)]
        arteries += tube(ext, 4.2)
        arteries += tube([(s * 50, 10, 70), (s * 48, 35, 40), (s * 40, 45, 10)], 2.6)
        vein = [(-8, 22, 135), *[(x - s * 11, y + 4, z) for x, y, z in ext[1:]]]
        veins += tube(vein, 5.5)
        veins += tube([(s * 39, 14, 70), (s * 37, 38, 40), (s * 30, 48, 10)], 3.5)
    bed = _SOFT + (L.SKIN,)
    for piece in arteries:
        canvas.paint(L.ARTERY, piece, where=bed)
    for piece in veins:
        canvas.paint(L.VEIN, piece, where=bed)


def build(canvas: Canvas, rng: np.random.Generator) -> dict:
    """Paint a pelvis into ``canvas`` (drawn with ``rng``); returns the drawn parameters."""
    sex = "male" if rng.uniform() < 0.5 else "female"
    p = {
        "sex": sex,
        "fat_mm": rng.uniform(8, 30) * (1.15 if sex == "female" else 1.0),
        "hip_x": rng.uniform(84, 96) * (1.04 if sex == "female" else 1.0),
        "bladder_fill": rng.uniform(0.55, 1.25),
        "gland_scale": rng.uniform(0.85, 1.3),
        "rectal_gas": bool(rng.uniform() < 0.75),
        "gas_level_mm": rng.uniform(-8, 8),
    }
    w, d = rng.uniform(0.95, 1.05), rng.uniform(0.92, 1.08)
    trunk = Cylinder((0, 5), (172 * w, 112 * d), (-40, BIG))
    buttocks = [Ellipsoid((s * 62, 52, -25), (88, 62 * d, 75)) for s in (-1, 1)]
    thighs = [Cylinder((s * 90, 5), (82 * w, 78 * d), (-BIG, 30)) for s in (-1, 1)]  # overlap: no inner caps
    outer = canvas.field(Union(trunk, *buttocks, *thighs, k=30))
    canvas.paint(L.SKIN, outer)
    canvas.paint(L.FAT, outer, hi=-2.0)
    canvas.paint(L.MUSCLE, outer, hi=-2.0 - p["fat_mm"])
    _abdomen(canvas, trunk, p, rng)
    _skeleton(canvas, p)
    gland = _organs(canvas, rng, p)
    _vessels(canvas, p["hip_x"])
    lesions = []
    centre = gland + rng.uniform(-1, 1, size=3) * np.array([8, 4, 6]) + np.array([0, 6, 0])
    sites = [("gland", centre, rng.uniform(5, 12))]
    if rng.uniform() < 0.5:  # an enlarged lymph node along the external iliac vessels
        s = rng.choice([-1, 1])
        sites.append(("lymph node", np.array([s * (p["hip_x"] - 32), -8, 45]), rng.uniform(5, 10)))
    for site, c, r in sites:
        canvas.paint(L.LESION, Blob(c, r, rng), where=_SOFT + (L.PROSTATE, L.UTERUS))
        lesions.append(
            {
                "site": site,
                "center_anatomical_mm": [round(float(v), 1) for v in c],
                "radius_mm": round(r * canvas.frame.scale, 1),
            }
        )
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in p.items()} | {"lesions": lesions}
