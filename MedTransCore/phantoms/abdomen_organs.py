"""Abdominal organs for ``abdomen.build``: liver, gallbladder, spleen, kidneys, pancreas, gut, vessels, lesions.

Positions are typical adult anatomy in the abdomen's frame (mm, x: right -> left, y: anterior -> posterior,
z: inferior -> superior, origin at the renal hila). Organs are painted only into the fat of the abdominal
cavity (``belly``, below the diaphragm), so the body wall, the spine and the muscles stay where they are;
later structures carve earlier ones where anatomy does (perirenal fat into the liver, vessels into organs).
"""

from __future__ import annotations

import numpy as np

from .shapes import Blob, Canvas, Ellipsoid, Intersection, Offset, Plane, Shape, Union, rotation, tube
from .tissues import Label as L

_ORGANS = (L.LIVER, L.SPLEEN, L.PANCREAS, L.KIDNEY_CORTEX, L.KIDNEY_MEDULLA, L.BOWEL)
_VESSEL_BED = (L.FAT, L.MUSCLE) + _ORGANS + (L.GALLBLADDER,)


def _paint_tube(canvas: Canvas, label: int, points, radii, where) -> None:
    for piece in tube(points, radii):
        canvas.paint(label, piece, where=where)


def _liver_spleen(canvas: Canvas, p: dict, belly: Shape) -> None:
    """Liver (right lobe, left lobe over the stomach), gallbladder in its fossa, spleen along the left ribs."""
    s = p["liver_scale"]
    liver = Union(
        Ellipsoid((-72, 15, 42), np.array([70, 88, 92]) * s, angles=(0, 22, 0)),  # lower tip lateral
        Ellipsoid((-5, -35, 68), np.array([62, 34, 44]) * s, angles=(0, 0, -10)),
        k=25,
    )
    canvas.paint(L.LIVER, Intersection(liver, belly), where=(L.FAT,))
    canvas.paint(L.GALLBLADDER, Ellipsoid((-42, -48, -2), (15, 17, 34), angles=(25, 0, 15)), where=(L.LIVER, L.FAT))
    r = np.array([24, 55, 58]) * p["spleen_scale"]
    canvas.paint(L.SPLEEN, Intersection(Ellipsoid((88, 52, 42), r, angles=(0, 0, -35)), belly), where=(L.FAT,))


def _kidney(canvas: Canvas, side: int, centre: np.ndarray) -> None:
    """One kidney in perirenal fat: cortex, twelve medullary pyramids, sinus fat at the hilum (anteromedial)."""
    angles = (-15.0, -side * 12.0, side * 30.0)  # upper pole medial and posterior, hilum facing forwards
    rot, mirror = rotation(angles), np.array([side, 1.0, 1.0])  # local x: lateral
    kidney = Ellipsoid(centre, (26, 21, 55), angles)
    canvas.paint(L.FAT, Offset(kidney, 9.0), where=(L.LIVER, L.SPLEEN, L.FAT))
    canvas.paint(L.KIDNEY_CORTEX, kidney, where=(L.FAT,))
    for h in (-30.0, -10.0, 10.0, 30.0):
        for a in np.deg2rad((-60.0, 0.0, 60.0)):
            local = np.array([10 * np.cos(a), 9 * np.sin(a), h])
            pyramid = Ellipsoid(centre + rot @ (local * mirror), (6.5, 6.0, 8.0), angles)
            canvas.paint(L.KIDNEY_MEDULLA, pyramid, where=(L.KIDNEY_CORTEX,))
    sinus = Ellipsoid(centre + rot @ (np.array([-16.0, 0.0, 0.0]) * mirror), (9, 8, 24), angles)
    canvas.paint(L.FAT, sinus, where=(L.KIDNEY_CORTEX, L.KIDNEY_MEDULLA))


def _kidney_z(side: int, p: dict) -> float:
    """Height of a kidney's centre: the right one lies lower, under the liver."""
    return 6.0 if side > 0 else -14.0 + p["kidney_drop_mm"]


def _gut(canvas: Canvas, rng: np.random.Generator, p: dict, belly: Shape) -> None:
    """Stomach with a gas cap, duodenum, colon with gas-mottled stool, small-bowel loops (some with gas)."""
    where = (L.FAT,)
    stomach = Union(
        Ellipsoid((52, 5, 88), (40, 36, 38)),
        Ellipsoid((38, -38, 42), (40, 26, 44), angles=(0, 0, 25)),
        *tube([(35, -48, 18), (5, -55, 14), (-20, -45, 24)], [18, 15, 11]),
        k=15,
    )
    canvas.paint(L.BOWEL, Intersection(stomach, belly), where=where)
    if p["stomach_gas"]:  # supine: the gas rises anteriorly (towards -y)
        gas = Intersection(Offset(stomach, -4.0), Plane((0, p["stomach_gas_level_mm"], 0), (0, 1, 0)))
        canvas.paint(L.AIR_CAVITY, gas, where=(L.BOWEL,))
    duodenum = [(-20, -45, 24), (-45, -22, 22), (-52, 0, 0), (-46, 8, -34), (-12, 10, -50), (22, 4, -44), (36, -6, -28)]
    _paint_tube(canvas, L.BOWEL, duodenum, 11, where)
    colon = [(-92, -10, -170), (-104, 14, -100), (-100, 8, -30), (-78, -40, -6), (-40, -76, -14), (20, -80, -22)]
    colon += [(72, -58, 12), (104, 0, 44), (110, 30, -20), (100, 24, -120), (62, -12, -205)]
    radii = rng.uniform(18, 26, size=len(colon))
    _paint_tube(canvas, L.BOWEL, colon, radii, where)
    for point, radius in zip(colon, radii, strict=True):  # gas bubbles in the stool, sometimes a gas cap
        for _ in range(int(rng.integers(1, 4))):
            c = np.asarray(point) + rng.uniform(-0.5, 0.5, size=3) * radius
            canvas.paint(L.AIR_CAVITY, Blob(c, rng.uniform(3, 9), rng), where=(L.BOWEL,))
        if rng.uniform() < 0.3:
            cap = Intersection(Ellipsoid(point, (radius - 4,) * 3), Plane((0, point[1] - 4, 0), (0, 1, 0)))
            canvas.paint(L.AIR_CAVITY, cap, where=(L.BOWEL,))
    for k in range(int(rng.integers(10, 15))):  # jejunum in the left upper quadrant first, then the ileum lower
        lo, hi = ((0, -70, -40), (95, 25, 30)) if k < 4 else ((-85, -75, -240), (85, 20, -20))
        points = [rng.uniform(lo, hi)]
        for _step in range(5):
            step = rng.normal(size=3)
            points.append(np.clip(points[-1] + 30 * step / np.linalg.norm(step), lo, hi))
        loop = tube(points, rng.uniform(10, 14))
        for piece in loop:
            canvas.paint(L.BOWEL, piece, where=where)
        if rng.uniform() < 0.35:
            level = Plane((0, points[0][1] + rng.uniform(-6, 2), 0), (0, 1, 0))
            for piece in loop:
                canvas.paint(L.AIR_CAVITY, Intersection(Offset(piece, -3.0), level), where=(L.BOWEL,))


def _pancreas(canvas: Canvas) -> None:
    """Head in the duodenal sweep, neck over the portal confluence, body over the aorta, tail to the splenic hilum."""
    gland = [(-30, -2, -24), (-24, -12, -4), (0, -26, 6), (32, -12, 14), (58, 10, 22), (74, 26, 28)]
    _paint_tube(canvas, L.PANCREAS, gland, [17, 14, 12, 12, 10, 8], where=(L.FAT, L.LIVER))


def _vessels(canvas: Canvas, p: dict) -> None:
    """Aorta and branches, IVC, renal and hepatic veins, portal vein with the splenic and mesenteric veins."""
    kz = {s: _kidney_z(s, p) for s in (-1, 1)}
    arteries = [tube([(8, 16, 260), (10, 14, 60), (12, 12, 0), (10, 12, -110)], [12, 11, 11, 10])]
    arteries += [tube([(10, 2, 30), (10, -14, 34), (-40, -10, 36), (-60, 5, 40)], [4.5, 4, 3, 2.5])]  # celiac, hepatic
    arteries += [tube([(10, -14, 34), (50, 8, 36), (80, 32, 38)], [3.5, 3, 2.5])]  # splenic artery
    arteries += [tube([(10, 2, 16), (10, -14, 6), (8, -24, -60), (5, -34, -160)], [4.5, 4.5, 4, 3])]  # SMA
    veins = [tube([(-20, 22, 260), (-22, 20, 100), (-25, 15, 0), (-20, 14, -110)], [13, 13, 11, 10])]  # IVC
    veins += [tube([(-20, 20, 110), (x, y, z)], [5.5, 3]) for x, y, z in ((-95, 5, 80), (-45, -40, 88), (15, -28, 96))]
    for s in (-1, 1):
        hilum = (s * 44, 40, kz[s])
        arteries += [tube([(s * 6, 12, kz[s] + 8), hilum], 3.5)]
        arteries += [tube([(s * 8, 14, -110), (s * 40, 22, -220)], [7, 6])]  # common iliac
        veins += [tube([(s * -4, 18, -110), (s * 36, 28, -220)], [8, 7])]
    veins += [tube([(44, 40, 6), (20, 0, 4), (10, -2, 2), (-20, 14, 0)], [5, 4.5, 4, 5])]  # left renal vein
    veins += [tube([(-44, 40, kz[-1]), (-25, 18, kz[-1] + 6)], 5)]
    portal = [tube([(-6, -6, 10), (-40, 4, 44)], 7.5), tube([(-40, 4, 44), (-80, 14, 55)], [5.5, 3])]
    portal += [tube([(-40, 4, 44), (-10, -22, 62)], [5, 3])]
    portal += [tube([(-6, -6, 10), (30, 10, 16), (68, 32, 28)], [5, 4.5, 4])]  # splenic vein
    portal += [tube([(-6, -6, 10), (-4, -22, -50), (0, -34, -160)], [6, 5.5, 4])]  # superior mesenteric vein
    for label, group in ((L.ARTERY, arteries), (L.VEIN, veins), (L.PORTAL_VEIN, portal)):
        for pieces in group:
            for piece in pieces:
                canvas.paint(label, piece, where=_VESSEL_BED)


def _lesions(canvas: Canvas, rng: np.random.Generator) -> list[dict]:
    """One or two hypovascular metastases in the right lobe of the liver."""
    out = []
    for _ in range(int(rng.integers(1, 3))):
        c = np.array([-85.0, -5.0, 35.0]) + rng.uniform(-1, 1, size=3) * np.array([25, 30, 30])
        r = float(rng.uniform(7, 18))
        canvas.paint(L.LESION, Blob(c, r, rng), where=(L.LIVER,))
        out.append({"site": "liver", "center_anatomical_mm": [round(float(v), 1) for v in c]})
        out[-1]["radius_mm"] = round(r * canvas.frame.scale, 1)
    return out


def paint_organs(canvas: Canvas, rng: np.random.Generator, p: dict, belly: Shape) -> list[dict]:
    """Paint the abdominal organs into the cavity fat ``belly``; returns the lesions drawn."""
    _liver_spleen(canvas, p, belly)
    for side in (-1, 1):
        _kidney(canvas, side, np.array([side * 64.0, 50.0, _kidney_z(side, p)]))
    _pancreas(canvas)
    _gut(canvas, rng, p, belly)
    _vessels(canvas, p)
    return _lesions(canvas, rng)
