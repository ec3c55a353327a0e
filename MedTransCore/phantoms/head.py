"""Head and neck label map: scalp, skull with diploe, face, orbits, sinuses, spine, brain, vessels, lesions.

Anatomical frame in mm (x: right -> left, y: anterior -> posterior, z: inferior -> superior); the
volume centre (0, 0, 0) lies at the level of the lateral ventricles, so the mid axial slice is the
classic "ventricle" slice and the mid sagittal slice shows the brain, ventricles, cerebellum, brainstem,
spine and face. Sizes are typical adult dimensions; the frame scales them to the field of view.
"""

from __future__ import annotations

import numpy as np

from .shapes import BIG, Blob, Canvas, Capsule, Cylinder, Ellipsoid, Intersection, Offset, Plane, Shell, Union, tube
from .tissues import Label as L

HALF_EXTENT = (80.0, 108.0, 76.0)
CENTRE = (0.0, 0.0, 12.0)  # the lateral ventricles
MAX_SHIFT = (10.0, 10.0, 3.0)  # keep the ventricles in the mid axial slice
_INSIDE_SKULL = (L.CSF, L.GREY_MATTER, L.WHITE_MATTER)
_SOFT = (L.FAT, L.MUSCLE, L.SKIN)
_VESSEL_BED = (L.FAT, L.MUSCLE, L.CSF, L.GREY_MATTER, L.WHITE_MATTER, L.CORTICAL_BONE, L.CANCELLOUS_BONE)


def _sulci(x, y, z, rng: np.random.Generator, wavelength: float, count: int, flatten_z: float = 1.0):
    """Approximate distance (mm) to the zero set of a random sum of plane waves: a gyral pattern."""
    k = 2 * np.pi / wavelength
    dirs = rng.normal(size=(count, 3)) * np.array([1.0, 1.0, flatten_z])
    dirs = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * k).astype(np.float32)
    n = np.zeros_like(x)
    for d, ph in zip(dirs, rng.uniform(0, 2 * np.pi, size=count).astype(np.float32), strict=True):
        n += np.sin(d[0] * x + d[1] * y + d[2] * z + ph)
    return np.abs(n) / np.float32(k * np.sqrt(count / 2))


def _brain(canvas: Canvas, icv_field, fossa: Ellipsoid, p: dict, rng: np.random.Generator) -> None:
    """Cerebrum (gyri, sulci, interhemispheric fissure) and cerebellum (folia) inside the CSF-filled skull."""
    reg = icv_field.region
    x, y, z = canvas.x[reg], canvas.y[reg], canvas.z[reg]
    labels = canvas.labels[reg]
    brain = icv_field.values + np.float32(p["csf_mm"])
    fossa_d = fossa.sdf(x, y, z)
    cerebrum = np.maximum(brain, -(fossa_d - np.float32(2.5)))  # tentorium: a CSF gap above the fossa
    sulcus = np.maximum(_sulci(x, y, z, rng, 34.0, 4) - np.float32(p["sulcus_mm"]), -cerebrum - np.float32(12))
    # interhemispheric fissure, closed where the corpus callosum and the diencephalon join the hemispheres
    bridge = Union(
        Ellipsoid((0, 2, p["cc_top"] - 14), (30, 40, 14)), Ellipsoid((0, 6, p["cc_top"] - 34), (30, 30, 26))
    ).sdf(x, y, z)
    fissure = np.maximum(np.abs(x) - np.float32(1.2), -bridge)
    to_csf = np.minimum(np.minimum(-cerebrum, sulcus), fissure)
    labels[to_csf > 0] = L.GREY_MATTER
    labels[to_csf > np.float32(p["cortex_mm"])] = L.WHITE_MATTER
    cb = np.maximum(fossa_d + np.float32(1.0), brain)
    folia = np.maximum(_sulci(x, y, z, rng, 11.0, 4, flatten_z=4.0) - np.float32(0.5), -cb - np.float32(6))
    cb_csf = np.minimum(-cb, folia)
    labels[(cb_csf > 0) & (fossa_d < 0)] = L.GREY_MATTER
    labels[(-cb > np.float32(9)) & (folia > np.float32(1.0))] = L.WHITE_MATTER


def _deep_structures(canvas: Canvas, p: dict) -> None:
    """Basal ganglia, thalami, ventricles and brainstem (scaled with the ventricles where it matters)."""
    v = p["ventricle_scale"]
    for s in (-1, 1):
        canvas.paint(L.GREY_MATTER, Ellipsoid((s * 9, 12, 0), (8, 13, 9)), where=_INSIDE_SKULL)  # thalamus
        canvas.paint(L.GREY_MATTER, Ellipsoid((s * (12 + 2 * v), -16, 10), (5, 9, 8)), where=_INSIDE_SKULL)  # caudate
        canvas.paint(L.GREY_MATTER, Ellipsoid((s * 24, -2, 1), (6, 15, 10)), where=_INSIDE_SKULL)  # lentiform
    for s in (-1, 1):  # lateral ventricles: body, occipital and temporal horns
        canvas.paint(L.CSF, Ellipsoid((s * (3 + 6 * v), -4, 12), (6 * v, 27, 7 * v), angles=(0, 0, -s * 6)))
        for piece in tube([(s * 10 * v, 18, 12), (s * 17, 40, 6)], [5 * v, 2.0]):
            canvas.paint(L.CSF, piece, where=_INSIDE_SKULL)
        for piece in tube([(s * 16, 20, 8), (s * 28, 10, -10), (s * 30, -10, -18)], [3.5 * v, 3 * v, 2.0]):
            canvas.paint(L.CSF, piece, where=_INSIDE_SKULL)
    canvas.paint(L.CSF, Ellipsoid((0, 8, -1), (2.0 * v, 13, 9)), where=_INSIDE_SKULL)  # third ventricle
    for piece in tube([(0, 34, -62), (0, 24, -44), (0, 14, -25), (0, 10, -6)], [6, 9, 11, 9]):
        canvas.paint(L.WHITE_MATTER, piece, where=_INSIDE_SKULL)  # brainstem
    canvas.paint(L.WHITE_MATTER, Ellipsoid((0, 8, -26), (15, 13, 12)), where=_INSIDE_SKULL)  # pons
    canvas.paint(L.CSF, Ellipsoid((0, 26, -27), (6, 4, 7)), where=_INSIDE_SKULL)  # fourth ventricle


def _face_and_neck(canvas: Canvas, p: dict) -> None:
    """Mandible, palate, zygoma, cervical spine, orbits, sinuses and airway (before the skull contents)."""
    for s in (-1, 1):
        jaw = [(s * 47, 6, -28), (s * 46, 0, -58), (s * 42, -32, -80), (s * 22, -62, -86), (0, -70, -87)]
        for piece in tube(jaw, 7):
            canvas.paint(L.CORTICAL_BONE, piece, where=_SOFT)
        for piece in tube(jaw, 4):
            canvas.paint(L.CANCELLOUS_BONE, piece, where=(L.CORTICAL_BONE,))
        for piece in tube([(s * 48, -62, -26), (s * 60, -30, -30), (s * 58, 2, -32)], 3.5):
            canvas.paint(L.CORTICAL_BONE, piece, where=_SOFT)
    canvas.paint(L.CORTICAL_BONE, Ellipsoid((0, -52, -60), (28, 30, 4)), where=_SOFT)  # hard palate
    # cervical spine: vertebral bodies (cortical rim, cancellous core), discs, arch, canal, cord
    canvas.paint(L.CORTICAL_BONE, Cylinder((0, 18), (13, 11), (-BIG, -50)), where=_SOFT)
    canvas.paint(L.CANCELLOUS_BONE, Cylinder((0, 18), (11.5, 9.5), (-BIG, -51.5)), where=(L.CORTICAL_BONE,))
    for z in np.arange(-68.0, -BIG, -17.0)[:12]:
        canvas.paint(L.MUSCLE, Cylinder((0, 18), (13, 11), (z - 2, z + 2)), where=(L.CANCELLOUS_BONE, L.CORTICAL_BONE))
    canvas.paint(L.CORTICAL_BONE, Cylinder((0, 38), (14, 12), (-BIG, -52)), where=_SOFT)
    eye_z = -20.0
    for s in (-1, 1):
        orbit = Ellipsoid((s * 30, -58, eye_z), (17, 24, 16))
        wall = Intersection(Shell(Offset(orbit, 2.0), 2.0), Plane((0, -66, 0), (0, -1, 0)))  # open in front
        canvas.paint(L.CORTICAL_BONE, wall, where=_SOFT)
        canvas.paint(L.FAT, orbit, where=_SOFT)
        canvas.paint(L.WHITE_MATTER, Capsule((s * 31, -62, eye_z), (s * 12, -24, eye_z - 8), 2.5), where=(L.FAT,))
        canvas.paint(L.EYE, Ellipsoid((s * 31, -70, eye_z), (12, 12, 12)), where=(L.FAT, L.MUSCLE, L.WHITE_MATTER))
    sinuses = [Ellipsoid((0, -68, -46), (8, 24, 15))]  # nasal cavity
    sinuses += [Ellipsoid((s * 27, -56, -48), (13, 16, 13) * np.array(p["maxillary"])) for s in (-1, 1)]
    if p["ethmoid"]:
        sinuses.append(Ellipsoid((0, -58, -22), (8, 13, 10)))
    if p["sphenoid"]:
        sinuses.append(Ellipsoid((0, -26, -32), (11, 10, 9)))
    for sinus in sinuses:
        canvas.paint(L.CORTICAL_BONE, sinus, lo=0, hi=1.5, where=_SOFT)
    for sinus in sinuses:
        canvas.paint(L.AIR_CAVITY, sinus)
    for piece in tube([(0, -48, -46), (0, -28, -44), (0, -22, -65), (0, -12, -95), (0, -10, -BIG)], [6, 8, 8, 8, 8]):
        canvas.paint(L.AIR_CAVITY, piece, where=_SOFT + (L.CORTICAL_BONE,))


def _vessels(canvas: Canvas) -> None:
    """Carotid, vertebral-basilar and cerebral arteries; jugular veins and dural sinuses."""
    arteries, veins = [], []
    for s in (-1, 1):
        carotid = [(s * 22, 0, -BIG), (s * 21, 2, -60), (s * 16, 0, -36), (s * 14, -6, -18), (s * 13, -6, -8)]
        arteries += tube(carotid, 3.2)
        arteries += tube([(s * 13, -6, -8), (s * 30, -8, -6), (s * 46, 0, 3)], [2.2, 1.8, 1.5])  # MCA
        arteries += tube([(s * 13, -6, -8), (s * 3, -18, 0), (s * 2.5, -32, 22), (s * 2.5, -8, 46)], 1.5)  # ACA
        arteries += tube([(s * 20, 26, -BIG), (s * 20, 26, -58), (s * 7, 18, -46), (0, -4, -38)], 2.0)  # vertebral
        arteries += tube([(0, -4, -14), (s * 18, 8, -10), (s * 30, 40, -4)], 1.6)  # PCA
        veins += tube([(s * 4, 84, -6), (s * 30, 80, -8), (s * 48, 58, -14), (s * 50, 38, -26)], 3.5)  # transverse
        veins += tube([(s * 50, 38, -26), (s * 34, 28, -46), (s * 28, 22, -62), (s * 28, 15, -BIG)], [3.5, 4.5, 5, 5])
    arteries += tube([(0, -4, -38), (0, -4, -14)], 2.2)  # basilar
    theta = np.deg2rad(np.linspace(158, 8, 8))  # superior sagittal sinus along the inner vault
    sss = [(0, 8 + 80 * np.cos(t), 12 + 56 * np.sin(t)) for t in theta] + [(0, 84, -6)]
    veins += tube(sss, 3.5) + tube([(0, 22, 16), (0, 84, -6)], 2.0)  # + straight sinus
    for piece in arteries:
        canvas.paint(L.ARTERY, piece, where=_VESSEL_BED)
    for piece in veins:
        canvas.paint(L.VEIN, piece, where=_VESSEL_BED)


def _lesions(canvas: Canvas, rng: np.random.Generator, cerebrum: Ellipsoid, frame_scale: float) -> list[dict]:
    """1-3 tumours in the cerebral white matter: oedema, enhancing rim, necrotic core when large."""
    out = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))):
        for _attempt in range(20):
            u = rng.normal(size=3)
            c = cerebrum.c + u / np.linalg.norm(u) * rng.uniform(0, 1) ** (1 / 3) * cerebrum.r * 0.6
            if abs(c[0]) > 14 and c[2] > -12:
                break
        r = float(rng.uniform(6, 17))
        canvas.paint(L.OEDEMA, Blob(c, r * rng.uniform(1.5, 2.1), rng, roughness=0.3), where=(L.WHITE_MATTER,))
        canvas.paint(L.LESION, Blob(c, r, rng), where=_INSIDE_SKULL + (L.OEDEMA, L.ARTERY, L.VEIN))
        necrotic = r > 10
        if necrotic:
            canvas.paint(L.NECROSIS, Blob(c + rng.normal(size=3), r * rng.uniform(0.45, 0.65), rng), where=(L.LESION,))
        out.append({"center_anatomical_mm": [round(float(v), 1) for v in c], "radius_mm": round(r * frame_scale, 1)})
        out[-1]["necrotic"] = necrotic
    return out


def build(canvas: Canvas, rng: np.random.Generator) -> dict:
    """Paint a head into ``canvas`` (drawn with ``rng``); returns the drawn parameters."""

    def j() -> float:  # per-dimension size jitter
        return float(rng.uniform(0.95, 1.05))

    p = {
        "skull_mm": rng.uniform(5.5, 8.0),
        "scalp_mm": rng.uniform(4.5, 7.0),
        "csf_mm": rng.uniform(1.0, 3.0),
        "sulcus_mm": rng.uniform(0.4, 1.0),
        "cortex_mm": rng.uniform(2.4, 3.2),
        "ventricle_scale": rng.uniform(0.75, 1.45),
        "maxillary": (j(), j(), j()),
        "ethmoid": bool(rng.uniform() < 0.85),
        "sphenoid": bool(rng.uniform() < 0.8),
    }
    p["cc_top"] = 12 + 7 * p["ventricle_scale"] + 5
    cerebrum = Ellipsoid((0, 8, 12), (64 * j(), 84 * j(), 60 * j()))
    fossa = Ellipsoid((0, 46, -28), (50 * j(), 34, 24))
    # skull base: anterior fossa rising over the orbits, deeper middle fossae (temporal lobes), clivus
    floor = Union(
        Plane((0, -20, -14), (0, -0.28, -0.96)),
        *[Ellipsoid((s * 36, 4, -14), (30, 30, 26)) for s in (-1, 1)],
        Ellipsoid((0, 18, -30), (16, 20, 30)),
        fossa,
        k=10,
    )
    icv = Union(Intersection(cerebrum, floor), fossa, k=16)
    neck = Cylinder((0, 18), (52 * j(), 56 * j()), (-BIG, -30))
    face = Union(
        Ellipsoid((0, -42, -40), (60, 54, 52)),
        Ellipsoid((0, -40, -74), (50, 46, 26)),
        Ellipsoid((0, -2, -40), (68, 40, 32)),  # cheeks, masseters, parotids
        k=12,
    )
    nose = Ellipsoid((0, -94, -40), (9, 14, 20))
    outer = canvas.field(Union(Offset(icv, p["skull_mm"] + p["scalp_mm"]), face, neck, nose, k=14))
    canvas.paint(L.SKIN, outer)
    canvas.paint(L.FAT, outer, hi=-2.0)
    canvas.paint(L.MUSCLE, outer, hi=-p["scalp_mm"])
    for s in (-1, 1):
        canvas.paint(L.MUSCLE, Ellipsoid((s * 66, -6, 4), (16, 42, 34)), where=(L.FAT,))  # temporalis
    skull = canvas.field(icv, pad=p["skull_mm"] + 1)
    canvas.paint(L.CORTICAL_BONE, skull, lo=0, hi=p["skull_mm"])
    canvas.paint(L.CANCELLOUS_BONE, skull, lo=1.8, hi=p["skull_mm"] - 1.8)
    _face_and_neck(canvas, p)
    canvas.paint(L.CSF, skull)
    _brain(canvas, skull, fossa, p, rng)
    _deep_structures(canvas, p)
    canvas.paint(L.CSF, Cylinder((0, 38), (8, 8), (-BIG, -40)), where=_SOFT + (L.CORTICAL_BONE, L.CANCELLOUS_BONE))
    canvas.paint(L.WHITE_MATTER, Cylinder((0, 38), (4.5, 4), (-BIG, -56)), where=(L.CSF,))  # spinal cord
    _vessels(canvas)
    lesions = _lesions(canvas, rng, cerebrum, canvas.frame.scale)
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in p.items() if k != "maxillary"} | {
        "lesions": lesions
    }
