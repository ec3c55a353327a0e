"""Abdomen label map: body wall, spine, lower ribs, lung bases and diaphragm, then the organs (``abdomen_organs``).

Anatomical frame in mm (x: right -> left, y: anterior -> posterior, z: inferior -> superior); the origin
lies at the level of the renal hila (about L1-L2), so the mid axial slice shows the right lobe of the
liver, the spleen tip, both kidneys with cortex, medulla and sinus fat, the pancreas, the aorta and the
inferior vena cava, the portal confluence, bowel with gas, a lumbar vertebra and the lower ribs. The body
is open along z (a slab of the trunk from the lung bases to the iliac crests).
"""

from __future__ import annotations

import numpy as np

from .abdomen_organs import paint_organs
from .shapes import BIG, Canvas, Capsule, Cylinder, Ellipsoid, Intersection, Offset, Plane, Shape, Union, tube
from .tissues import Label as L

HALF_EXTENT = (178.0, 125.0, float("inf"))
CENTRE = (0.0, 0.0, 0.0)
MAX_SHIFT = (10.0, 10.0, 10.0)
# CT noise (HU) of a diagnostic abdomen scan: a wider body than a head, more photon noise at the same dose.
CT_NOISE_HU = (7.0, 13.0)
_SOFT = (L.FAT, L.MUSCLE)
# ribs 7-12: (z of the head at the spine, drop in z towards the anterior end, angle of the end from the back)
_RIBS = ((250.0, 150.0, 2.7), (214.0, 140.0, 2.6), (178.0, 130.0, 2.5), (127.0, 130.0, 2.3), (91.0, 110.0, 1.8))
_RIBS += ((55.0, 80.0, 1.35),)


class _Outside(Shape):
    """Everything outside ``shape`` (its complement)."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.lo, self.hi = np.full(3, -BIG), np.full(3, BIG)

    def sdf(self, x, y, z):
        return -self.shape.sdf(x, y, z)


def _bone(canvas: Canvas, shape: Shape, cortex_mm: float) -> None:
    """A bone: cortical shell of ``cortex_mm`` around cancellous bone, painted over soft tissue."""
    field = canvas.field(shape)
    canvas.paint(L.CORTICAL_BONE, field, where=_SOFT + (L.LUNG, L.CANCELLOUS_BONE))
    canvas.paint(L.CANCELLOUS_BONE, field, hi=-cortex_mm, where=(L.CORTICAL_BONE,))


def _spine(canvas: Canvas) -> None:
    """Lumbar and lower thoracic vertebrae (body, arch, spinous and transverse processes), discs, canal."""
    for z0 in np.arange(-234.0, 270.0, 36.0):
        _bone(canvas, Cylinder((0, 40), (23, 18), (z0, z0 + 28)), 2.0)
        arch = Union(
            Cylinder((0, 62), (15, 13), (z0 + 2, z0 + 24)),
            Capsule((0, 70, z0 + 12), (0, 98, z0 + 6), 6, 5),  # spinous process
            *[Capsule((s * 10, 60, z0 + 14), (s * 42, 66, z0 + 14), 6, 4) for s in (-1, 1)],  # transverse
            k=4,
        )
        _bone(canvas, arch, 2.0)
        canvas.paint(L.MUSCLE, Cylinder((0, 40), (22, 17), (z0 + 28, z0 + 36)), where=_SOFT)  # disc
    canvas.paint(L.CSF, Cylinder((0, 62), (9, 8)), where=(L.CORTICAL_BONE, L.CANCELLOUS_BONE) + _SOFT)


def _ribs(canvas: Canvas, rx: float, ry: float) -> None:
    """Ribs 7-12 in the body wall: from the transverse processes around the flank, descending anteriorly."""
    for z_head, drop, end in _RIBS:
        theta = np.linspace(0.3, end, 12)
        points = [(rx * np.sin(t), ry * np.cos(t), z_head - drop * (t - 0.3) / (end - 0.3)) for t in theta]
        for s in (-1, 1):
            mirrored = [(s * x, y, z) for x, y, z in points]
            for piece in tube(mirrored, 4.5):
                _bone(canvas, piece, 1.5)


def _muscles(canvas: Canvas, inner: Shape) -> None:
    """Paraspinal (erector spinae), quadratus lumborum and psoas muscles."""
    for s in (-1, 1):
        back = Intersection(Cylinder((s * 36, 86), (30, 24)), inner)
        canvas.paint(L.MUSCLE, back, where=(L.FAT,))
        canvas.paint(L.MUSCLE, Capsule((s * 66, 78, 70), (s * 74, 80, -200), 10, 14), where=(L.FAT,))
        canvas.paint(L.MUSCLE, Capsule((s * 28, 40, 70), (s * 55, 42, -220), 6, 24), where=(L.FAT,))  # psoas


def _thorax(canvas: Canvas, cavity: Shape, p: dict) -> Shape:
    """Lung bases in the costophrenic recesses above the diaphragm; returns the abdominal side of the domes."""
    domes = Union(
        Ellipsoid((-55, 20, -20), (125, 118, 150 + p["dome_mm"])),  # right dome, higher over the liver
        Ellipsoid((55, 20, -20), (125, 118, 128 + p["dome_mm"])),
        k=30,
    )
    lung = Intersection(cavity, _Outside(domes), Plane((0, 0, 30), (0, 0, -1)))
    canvas.paint(L.LUNG, lung, where=(L.FAT,))
    canvas.paint(L.MUSCLE, Intersection(Offset(domes, 4.0), cavity), lo=0.0, where=(L.LUNG,))  # diaphragm
    return domes


def build(canvas: Canvas, rng: np.random.Generator) -> dict:
    """Paint an abdomen into ``canvas`` (drawn with ``rng``); returns the drawn parameters."""
    p = {
        "fat_mm": rng.uniform(10, 35),
        "wall_mm": rng.uniform(9, 14),
        "dome_mm": rng.uniform(-15, 15),
        "liver_scale": rng.uniform(0.9, 1.1),
        "spleen_scale": rng.uniform(0.8, 1.2),
        "kidney_drop_mm": rng.uniform(-10, 10),
        "stomach_gas": bool(rng.uniform() < 0.8),
        "stomach_gas_level_mm": rng.uniform(-45, -15),
    }
    w, d = rng.uniform(0.94, 1.06), rng.uniform(0.92, 1.08)
    trunk = Union(Cylinder((0, 0), (165 * w, 112 * d)), Cylinder((0, 35), (148 * w, 84 * d)), k=25)
    outer = canvas.field(trunk)
    canvas.paint(L.SKIN, outer)
    canvas.paint(L.FAT, outer, hi=-2.0)
    canvas.paint(L.MUSCLE, outer, hi=-2.0 - p["fat_mm"])
    cavity = Offset(trunk, -(2.0 + p["fat_mm"] + p["wall_mm"]))
    canvas.paint(L.FAT, cavity, where=(L.MUSCLE,))
    _muscles(canvas, Offset(trunk, -(2.0 + p["fat_mm"])))
    domes = _thorax(canvas, cavity, p)
    _spine(canvas)
    inset = 2.0 + p["fat_mm"] + p["wall_mm"] / 2
    _ribs(canvas, 165 * w - inset, 112 * d - inset)
    lesions = paint_organs(canvas, rng, p, Intersection(cavity, domes))
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in p.items()} | {"lesions": lesions}
