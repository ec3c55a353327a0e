"""Photon dose on a CT and on a synthetic CT with one plan: pyRadPlan (the BSD-licensed Python matRad).

The plan is optimised on the real CT (beam geometry, dose influence matrix, fluence); the same beams and fluence
are then recomputed on the synthetic CT resampled onto the CT's grid. Any dose difference is therefore caused by
the sCT's HU (its electron densities along the rays), which is what a physicist wants to know before planning on it.

pyRadPlan is imported only here and only when a dose is computed: it is an optional extra (``medtrans[dose]``)
and takes seconds to import.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..preprocess import body_mask

#: Air HU given to sCT voxels outside its field of view once resampled onto the CT grid.
OUTSIDE_HU = -1024.0
TARGET_NAME = "TARGET"
BODY_NAME = "BODY"
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


class DoseCancelled(Exception):
    """The dose check was cancelled between two of its stages."""


@dataclass(frozen=True)
class PlanSettings:
    """How the photon plan is made.

    Args:
        beams: coplanar beams, evenly spaced gantry angles from 0.
        prescription_gy: dose the target should receive (Gy); organs at risk are kept below half of it.
        dose_grid_mm: isotropic spacing of the dose calculation grid (mm).
        target_radius_mm: radius of the spherical test target used when no target mask is given.
    """

    beams: int = 7
    prescription_gy: float = 60.0
    dose_grid_mm: float = 3.0
    target_radius_mm: float = 20.0

    def __post_init__(self) -> None:
        if not 1 <= self.beams <= 36:
            raise InputError(f"beams must be 1-36, got {self.beams}")
        if not self.prescription_gy > 0:
            raise InputError(f"the prescription must be positive, got {self.prescription_gy} Gy")
        if not 1.0 <= self.dose_grid_mm <= 10.0:
            raise InputError(f"the dose grid must be 1-10 mm, got {self.dose_grid_mm} mm")
        if not self.target_radius_mm > 0:
            raise InputError(f"the test target radius must be positive, got {self.target_radius_mm} mm")

    @property
    def gantry_angles(self) -> list[float]:
        """Evenly spaced coplanar gantry angles (degrees) from 0."""
        return [i * 360.0 / self.beams for i in range(self.beams)]


@dataclass
class DosePair:
    """The plan's dose on the CT and the same fluence recomputed on the sCT, both on the CT's grid (Gy).

    Attributes:
        ct_dose, sct_dose: float32 dose images.
        ct: the CT (float32 HU).
        sct: the sCT as the dose engine saw it (resampled onto the CT grid).
        structures: ``{name: uint8 mask on the CT grid}``: the target first, then the organs at risk, then the body.
        test_plan: True when the target is the spherical test target (no target mask was given).
        grid_note: how the sCT's grid differed from the CT's, or ``None`` when they matched.
        seconds: time per stage.
    """

    ct_dose: sitk.Image
    sct_dose: sitk.Image
    ct: sitk.Image
    sct: sitk.Image
    structures: dict[str, sitk.Image]
    test_plan: bool
    grid_note: str | None
    settings: PlanSettings
    seconds: dict[str, float] = field(default_factory=dict)


def grid_mismatch(image: sitk.Image, reference: sitk.Image) -> str | None:
    """What differs between two images' grids (size, spacing, origin, direction), or ``None``."""
    parts = []
    if image.GetSize() != reference.GetSize():
        parts.append(f"size {image.GetSize()} vs {reference.GetSize()}")
    if not np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-3):
        parts.append(f"spacing {_mm(image.GetSpacing())} vs {_mm(reference.GetSpacing())} mm")
    if not np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-2):
        parts.append(f"origin {_mm(image.GetOrigin())} vs {_mm(reference.GetOrigin())} mm")
    if not np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4):
        parts.append("direction differs")
    return "; ".join(parts) or None


def _mm(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in np.round(values, 2)) + ")"


def on_ct_grid(image: sitk.Image, ct: sitk.Image, *, label: bool = False, default: float = 0.0) -> sitk.Image:
    """``image`` resampled onto the CT's grid (linear, or nearest neighbour for a ``label`` mask)."""
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    pixel = sitk.sitkUInt8 if label else sitk.sitkFloat32
    return sitk.Resample(sitk.Cast(image, pixel), ct, sitk.Transform(), interpolator, default, pixel)


def sphere_target(body: sitk.Image, radius_mm: float, centre_mm: tuple[float, float, float] | None) -> sitk.Image:
    """A spherical test target of ``radius_mm`` at ``centre_mm`` (physical x, y, z), by default the body's centroid.

    Raises:
        InputError: the sphere holds no body voxel.
    """
    mask = sitk.GetArrayViewFromImage(body) > 0
    if centre_mm is None:
        centre_index = np.argwhere(mask).mean(axis=0)[::-1]  # (x, y, z) continuous index
        centre_mm = body.TransformContinuousIndexToPhysicalPoint([float(v) for v in centre_index])
    zz, yy, xx = np.indices(mask.shape)
    index = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3).astype(float)
    spacing, origin = np.array(body.GetSpacing()), np.array(body.GetOrigin())
    direction = np.array(body.GetDirection()).reshape(3, 3)
    points = origin + (index * spacing) @ direction.T
    inside = (np.linalg.norm(points - np.asarray(centre_mm, dtype=float), axis=1) <= radius_mm).reshape(mask.shape)
    target = inside & mask
    if not target.any():
        raise InputError(f"the test target ({radius_mm:g} mm around {_mm(centre_mm)} mm) holds no body voxel")
    out = sitk.GetImageFromArray(target.astype(np.uint8))
    out.CopyInformation(body)
    return out


@dataclass
class Plan:
    """A photon plan optimised on a CT, ready to be recomputed on any number of synthetic CTs.

    Attributes:
        ct: the CT (float32 HU); its grid is the grid of every dose.
        ct_dose: the plan's dose on the CT (Gy).
        structures: ``{name: uint8 mask on the CT grid}``: the target first, then the organs at risk, then the body.
        test_plan: True when the target is the spherical test target.
        seconds: time per planning stage.
    """

    ct: sitk.Image
    ct_dose: sitk.Image
    structures: dict[str, sitk.Image]
    test_plan: bool
    settings: PlanSettings
    seconds: dict[str, float]
    engine: SimpleNamespace = field(repr=False)
    problem: tuple = field(repr=False)  # pyRadPlan's (structure set, plan, beam geometry, fluence)


class _Stages:
    """Progress, cancellation, timing and pyRadPlan's silence around each stage of a dose computation."""

    def __init__(self, progress: ProgressFn | None, cancel: CancelFn | None) -> None:
        self.report = progress or (lambda fraction, stage: None)
        self.cancel = cancel
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, fraction: float):
        _check(self.cancel)
        self.report(fraction, name)
        start = time.perf_counter()
        with _quiet():
            yield
        self.seconds[name] = round(time.perf_counter() - start, 2)


def make_plan(
    ct: sitk.Image,
    *,
    target: sitk.Image | None = None,
    target_centre_mm: tuple[float, float, float] | None = None,
    oars: Mapping[str, sitk.Image] | None = None,
    settings: PlanSettings | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> Plan:
    """Optimise a photon plan on ``ct``.

    Args:
        ct: the real CT in HU (its grid is the grid of every dose).
        target: target mask (any grid; resampled by nearest neighbour). ``None``: a spherical test target of
            ``settings.target_radius_mm`` at ``target_centre_mm`` or the body's centre.
        target_centre_mm: physical (x, y, z) centre of the test target.
        oars: ``{name: mask}`` organs at risk, each kept below half the prescription.
        settings: beams, prescription and dose grid.
        progress: called with ``(fraction, stage)``.
        cancel: polled between stages; True raises :class:`DoseCancelled`.

    Raises:
        InputError: a non-3D CT, no body, or an empty or non-overlapping target or organ.
    """
    settings = settings or PlanSettings()
    if ct.GetDimension() != 3:
        raise InputError(f"the CT must be a 3D image, got {ct.GetDimension()}D")
    ct = sitk.Cast(ct, sitk.sitkFloat32)
    body = body_mask(ct, "CT")
    if not sitk.GetArrayViewFromImage(body).any():
        raise InputError("no body found in the CT (nothing above -500 HU)")
    test_plan = target is None
    target = (
        sphere_target(body, settings.target_radius_mm, target_centre_mm)
        if test_plan
        else _structure("target", target, ct)
    )
    structures = {TARGET_NAME: target}
    for name, mask in (oars or {}).items():
        if name.upper() in (TARGET_NAME, BODY_NAME):
            raise InputError(f"an organ at risk cannot be called {name!r}")
        structures[name] = _structure(name, mask, ct)
    structures[BODY_NAME] = body
    stage = _Stages(progress, cancel)
    with stage("loading the dose engine", 0.02):
        rp = _engine()
        ct_model = rp.validate_ct(cube_hu=ct)
        cst = rp.validate_cst(vois=_vois(rp, structures, settings), ct_image=ct_model)
        pln = rp.PhotonPlan(machine="Generic")
        pln.prop_stf = {"gantry_angles": settings.gantry_angles, "couch_angles": [0.0] * settings.beams}
        grid = settings.dose_grid_mm
        pln.prop_dose_calc = {"dose_grid": {"resolution": {"x": grid, "y": grid, "z": grid}}}
    with stage("beam geometry", 0.05):
        stf = rp.generate_stf(ct_model, cst, pln)
    with stage("dose influence on the CT", 0.1):
        dij = rp.calc_dose_influence(ct_model, cst, stf, pln)
    with stage("fluence optimisation", 0.5):
        weights = rp.fluence_optimization(ct_model, cst, stf, dij, pln)
        ct_dose = dij.compute_result_ct_grid(weights)["physical_dose"]
    return Plan(
        ct=ct,
        ct_dose=_dose_image(ct_dose, ct),
        structures=structures,
        test_plan=test_plan,
        settings=settings,
        seconds=stage.seconds,
        engine=rp,
        problem=(cst, pln, stf, weights),
    )


def sct_on_ct_grid(sct: sitk.Image, ct: sitk.Image) -> tuple[sitk.Image, str | None]:
    """``(the sCT on the CT's grid, how the grids differed or None)``.

    Raises:
        InputError: the sCT is not 3D or does not overlap the CT.
    """
    if sct.GetDimension() != 3:
        raise InputError(f"the sCT must be a 3D image, got {sct.GetDimension()}D")
    note = grid_mismatch(sct, ct)
    if not note:
        return sitk.Cast(sct, sitk.sitkFloat32), None
    resampled = on_ct_grid(sct, ct, default=OUTSIDE_HU)
    if not (sitk.GetArrayViewFromImage(resampled) > OUTSIDE_HU).any():
        raise InputError("the sCT does not overlap the CT")
    return resampled, note


def recompute(
    plan: Plan, sct: sitk.Image, *, progress: ProgressFn | None = None, cancel: CancelFn | None = None
) -> DosePair:
    """The plan's fluence recomputed on ``sct`` (any grid overlapping the CT; resampled, air outside)."""
    sct_on_ct, note = sct_on_ct_grid(sct, plan.ct)
    stage = _Stages(progress, cancel)
    cst, pln, stf, weights = plan.problem
    with stage("recompute on the sCT", 0.7):
        sct_model = plan.engine.validate_ct(cube_hu=sct_on_ct)
        sct_dose = plan.engine.calc_dose_forward(sct_model, cst, stf, pln, weights)["physical_dose"]
    stage.report(0.9, "dose computed")
    return DosePair(
        ct_dose=plan.ct_dose,
        sct_dose=_dose_image(sct_dose, plan.ct),
        ct=plan.ct,
        sct=sct_on_ct,
        structures=plan.structures,
        test_plan=plan.test_plan,
        grid_note=note,
        settings=plan.settings,
        seconds={**plan.seconds, **stage.seconds},
    )


def plan_and_recompute(
    ct: sitk.Image,
    sct: sitk.Image,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    **plan_options,
) -> DosePair:
    """Optimise a photon plan on ``ct`` (:func:`make_plan`; ``plan_options`` are its ``target``,
    ``target_centre_mm``, ``oars`` and ``settings``) and recompute its fluence on ``sct``.

    Args:
        sct: the synthetic CT in HU, on any grid overlapping the CT (resampled linearly, air outside).

    Raises:
        InputError: bad inputs (see :func:`make_plan`), or an sCT that is not 3D or lies outside the CT, all
            before any dose is computed.
    """
    if ct.GetDimension() != 3:
        raise InputError(f"the CT must be a 3D image, got {ct.GetDimension()}D")
    sct_on_ct_grid(sct, sitk.Cast(ct, sitk.sitkFloat32))  # a bad sCT fails before minutes of planning
    plan = make_plan(ct, progress=progress, cancel=cancel, **plan_options)
    return recompute(plan, sct, progress=progress, cancel=cancel)


def _engine() -> SimpleNamespace:
    """The pyRadPlan functions used here (imported on first use: the optional extra, slow to import)."""
    try:
        import pyRadPlan as rp
        from pyRadPlan.cst import create_voi
    except ImportError as exc:  # the optional extra is missing
        raise InputError(
            f"the dose check needs pyRadPlan ({exc}); `make demo` or `make test` install it, or by hand: "
            "pip install 'medtrans[dose]' && pip install --no-deps pyRadPlan==0.5.0"
        ) from None
    names = ("validate_ct", "validate_cst", "PhotonPlan", "generate_stf", "calc_dose_influence")
    names += ("fluence_optimization", "calc_dose_forward")
    return SimpleNamespace(create_voi=create_voi, **{name: getattr(rp, name) for name in names})


def _vois(rp: SimpleNamespace, structures: dict[str, sitk.Image], settings: PlanSettings) -> list:
    """pyRadPlan VOIs: the target to the prescription, organs at risk below half of it, the body below 80 %."""
    prescription = settings.prescription_gy
    vois = []
    for name, mask in structures.items():
        if name == TARGET_NAME:
            kind, objective = "TARGET", {"name": "Squared Deviation", "d_ref": prescription, "priority": 1000.0}
        elif name == BODY_NAME:
            kind, objective = "OAR", {"name": "Squared Overdosing", "d_max": 0.8 * prescription, "priority": 100.0}
        else:
            kind, objective = "OAR", {"name": "Squared Overdosing", "d_max": 0.5 * prescription, "priority": 300.0}
        vois.append(rp.create_voi(name=name, voi_type=kind, mask=mask, objectives=[objective]))
    return vois


def _structure(name: str, mask: sitk.Image, ct: sitk.Image) -> sitk.Image:
    on_grid = on_ct_grid(mask > 0, ct, label=True) if grid_mismatch(mask, ct) else sitk.Cast(mask > 0, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(on_grid).any():
        raise InputError(f"the {name} mask is empty on the CT's grid (does it overlap the CT?)")
    return on_grid


def _dose_image(dose, ct: sitk.Image) -> sitk.Image:
    image = dose if isinstance(dose, sitk.Image) else sitk.GetImageFromArray(np.asarray(dose, dtype=np.float32))
    image = sitk.Cast(image, sitk.sitkFloat32)
    if image.GetSize() != ct.GetSize():
        raise RuntimeError(f"the dose engine returned a {image.GetSize()} grid for a {ct.GetSize()} CT")
    image.CopyInformation(ct)
    return image


def _check(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise DoseCancelled("dose check cancelled")


@contextlib.contextmanager
def _quiet():
    """pyRadPlan prints tqdm bars, numpy warnings and log lines about its defaults (the scipy solver, the SVDPB
    engine) on stderr; the caller reports progress itself. Its errors still surface as exceptions."""
    engine_log = logging.getLogger("pyRadPlan")
    level = engine_log.level
    engine_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            with np.errstate(all="ignore"):
                yield
    finally:
        engine_log.setLevel(level)
