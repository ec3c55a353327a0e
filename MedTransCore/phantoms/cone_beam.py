"""A cone-beam CT simulated from any CT the way a linac's kV imager forms it, with RTK.

The CT (HU) becomes attenuation at an effective energy, is forward-projected (Joseph) in a circular cone-beam
geometry onto a flat panel, gets beam hardening, scatter and quantum noise on the detector, and is reconstructed with
FDK, then calibrated to HU with a simulated water phantom, as a scanner is. Beam hardening is what a scanner's water
calibration leaves: bone and metal (attenuation above soft tissue's, projected once more) are under-estimated
nonlinearly in their line integral, so dense objects cup and leave dark streaks between them; water is unchanged.
Outside the reconstructable field of view the result is -1000 HU and :attr:`ConeBeamResult.field_of_view` is 0. The
output lies on exactly the CT's grid::

    from MedTransCore.phantoms import ConeBeamSettings, simulate_cbct
    result = simulate_cbct(ct, ConeBeamSettings(views=180, half_fan=True, mas=500))
    result.image, result.field_of_view, result.metadata

A body wider than the field of view (full fan: ~26 cm; half fan: ~47 cm) is truncated, as on a scanner: FDK
extends the projections by mirroring, so the result stays finite with a bright rim near the FOV edge. Needs the
``cbct`` extra (``pip install "medtrans[cbct]"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import SimpleITK as sitk

from ..errors import CancelledError, InputError
from . import cone_beam_physics as physics
from . import cone_beam_rtk as rtk_ops
from .cone_beam_grid import from_rtk_frame, grid_images, rtk_shape, to_rtk_frame, work_grid
from .cone_beam_physics import ENERGY_RANGE_KEV, cylinder_line_integrals, detect, photons_per_pixel, water_mu_per_mm

# Without a recon_spacing_mm, voxels are at least this large (mm): a 2-core CPU reconstructs a body in seconds.
AUTO_RECON_SPACING_MM = 2.0
# HU range of the output (a 12-bit CT's): truncation and photon starvation can give values no scanner stores.
HU_RANGE = (-1024.0, 3071.0)
_CALIBRATIONS: dict[tuple, tuple[float, float]] = {}


@dataclass(frozen=True)
class ConeBeamSettings:
    """A linac kV cone-beam scan (defaults: a 40 x 30 cm panel at 150 cm, isocentre at 100 cm, full fan).

    Args:
        views: projections over one 360 degree rotation (clinical: 200-900; fewer is faster, with view aliasing).
        source_isocentre_mm: source to rotation axis distance.
        source_detector_mm: source to panel distance.
        panel_mm: panel size ``(u lateral, v axial)`` mm.
        pixel_mm: detector pixel pitch. 2 mm (1.33 mm at the isocentre, after the 1.5 magnification) is finer than
            the 2 mm reconstruction grid, so it does not blur the image, and 4x4 fewer rays than the native 0.4 mm
            panel keeps a scan at seconds.
        half_fan: shift the panel laterally by 40 % of its width (160 mm): the field of view grows from ~26 to
            ~47 cm in diameter (pelvis, thorax), each half seen once.
        energy_kev: effective energy of the beam (30-150 keV; ~60 keV for a filtered 100-125 kVp beam).
        scatter_to_primary: scatter-to-primary ratio behind a wide 20 cm water slab (0: no scatter). It grows
            with the thickness crossed and cups the image. 0.1, the residual of a grid and a vendor's scatter
            correction, cups a 30 cm water cylinder by ~40 HU (periphery minus centre, half fan, measured).
        mas: tube current-time product of the whole scan (head ~150, pelvis ~1000); ``None``: noise-free.
        beam_hardening: ``b``, the residual beam hardening of dense material after the scanner's water calibration
            (which corrects water's and soft tissue's own: they stay unchanged). The attenuation above soft tissue
            (200 HU) is projected on its own and its line integral ``d`` is measured as ``d / (1 + b d / d_ref)``,
            ``d_ref`` that of 2 cm of cortical bone (1500 HU): ``b`` is ~ the fraction by which such a bone path is
            under-estimated (exactly ``b / (1 + b)``). The loss grows as ``d^2``, so rays through two dense objects
            lose more than each alone: dark streaks between bones or metal, cupped rods. 0: monoenergetic, no extra
            projection; 0.05: mild; 0.2: strong.
        recon_spacing_mm: reconstruction voxel size (never finer than the CT's); ``None``: the larger of the CT's
            spacing and 2 mm per axis.
        seed: random seed of the noise.
    """

    views: int = 200
    source_isocentre_mm: float = 1000.0
    source_detector_mm: float = 1500.0
    panel_mm: tuple[float, float] = (400.0, 300.0)
    pixel_mm: float = 2.0
    half_fan: bool = False
    energy_kev: float = 60.0
    scatter_to_primary: float = 0.1
    mas: float | None = 1000.0
    beam_hardening: float = 0.0
    recon_spacing_mm: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(message)

        need(isinstance(self.views, int) and 8 <= self.views <= 2000, f"views must be 8 to 2000, got {self.views!r}")
        need(
            0 < self.source_isocentre_mm < self.source_detector_mm <= 5000,
            "need 0 < source_isocentre_mm < source_detector_mm <= 5000 mm, got "
            f"{self.source_isocentre_mm} and {self.source_detector_mm}",
        )
        need(0.1 <= self.pixel_mm <= 10, f"pixel_mm must be 0.1 to 10 mm, got {self.pixel_mm}")
        need(
            len(self.panel_mm) == 2 and all(8 * self.pixel_mm <= s <= 2000 for s in self.panel_mm),
            f"panel_mm must be (u, v), each 8 pixels to 2000 mm, got {self.panel_mm}",
        )
        low, high = ENERGY_RANGE_KEV
        need(low <= self.energy_kev <= high, f"energy_kev must be {low:g} to {high:g} keV, got {self.energy_kev}")
        need(0 <= self.scatter_to_primary <= 5, f"scatter_to_primary must be 0 to 5, got {self.scatter_to_primary}")
        need(
            self.mas is None or (math.isfinite(self.mas) and self.mas > 0),
            f"mas must be above 0 (or None: noise-free), got {self.mas}",
        )
        need(0 <= self.beam_hardening <= 1, f"beam_hardening must be 0 to 1, got {self.beam_hardening}")
        need(
            self.recon_spacing_mm is None or 0.25 <= self.recon_spacing_mm <= 10,
            f"recon_spacing_mm must be 0.25 to 10 mm (or None: automatic), got {self.recon_spacing_mm}",
        )
        need(isinstance(self.seed, int) and self.seed >= 0, f"seed must be a non-negative integer, got {self.seed!r}")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["panel_mm"] = list(self.panel_mm)
        return out

    def detector(self) -> rtk_ops.Detector:
        u, v = self.panel_mm
        return rtk_ops.Detector(
            sid=float(self.source_isocentre_mm),
            sdd=float(self.source_detector_mm),
            nu=max(2, round(u / self.pixel_mm)),
            nv=max(2, round(v / self.pixel_mm)),
            pixel=float(self.pixel_mm),
            shift=rtk_ops.HALF_FAN_SHIFT * u if self.half_fan else 0.0,
        )


@dataclass
class ConeBeamResult:
    """A simulated CBCT.

    Attributes:
        image: float32 HU on exactly the CT's grid (-1000 outside the field of view).
        field_of_view: uint8 0/1 on the same grid: the voxels the scan reconstructs.
        metadata: settings, HU calibration, timings (s), RTK version, truncation, ``"synthetic": "simulated CBCT"``.
    """

    image: sitk.Image
    field_of_view: sitk.Image
    metadata: dict


def _check_ct(ct: sitk.Image) -> None:
    if not isinstance(ct, sitk.Image):
        raise InputError(f"the CT must be a SimpleITK image, got {type(ct).__name__}")
    if ct.GetDimension() != 3 or ct.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"the CT must be a 3D scalar image, got {ct.GetDimension()}D")
    if min(ct.GetSize()) < 2:
        raise InputError(f"the CT is empty or a single slice (size {ct.GetSize()}); give a 3D volume")
    if not np.isfinite(sitk.GetArrayViewFromImage(ct)).all():
        raise InputError("the CT has NaN or infinite voxels; a scan cannot be simulated from it")


def _calibrate(settings: ConeBeamSettings, det: rtk_ops.Detector, mu_water: float, spacing) -> tuple[float, float]:
    """Reconstructed ``(mu water, mu air)`` of a long water cylinder scanned with these settings (noise-free).

    A scanner is calibrated the same way; the cylinder (20 cm, or less in a small FOV) is projected exactly, so the
    calibration carries the scan's scatter and FDK, not the ray tracer's voxel errors (water has no dense part, so
    beam hardening leaves it unchanged). Cached.
    """
    key = (replace(settings, seed=0, mas=None, recon_spacing_mm=None), tuple(round(float(s), 4) for s in spacing))
    if key in _CALIBRATIONS:
        return _CALIBRATIONS[key]
    fov = det.fov_radius_mm
    radius = min(100.0, 0.7 * fov)
    line = cylinder_line_integrals(radius, mu_water, det.u_mm, det.v_mm, det.sid, det.sdd)[None]
    measured = detect(
        line, mu_water=mu_water, u_mm=det.u_mm, pixel_mm=det.pixel, spr=settings.scatter_to_primary,
        beam_hardening=settings.beam_hardening, photons=None, rng=None,
    )  # fmt: skip
    step = float(spacing[0])
    n = 2 * math.ceil(fov / step) + 1
    size, grid_spacing = (n, 3, n), (step, float(spacing[1]), step)
    origin = [-(m - 1) / 2 * s for m, s in zip(size, grid_spacing)]
    slab = rtk_ops.reconstruct(np.repeat(measured, settings.views, axis=0), det, size, grid_spacing, origin)[:, 1]
    x = (np.arange(n) - (n - 1) / 2) * step
    r = np.hypot(x[:, None], x[None, :])
    water = float(slab[r < 0.4 * radius].mean())
    air = float(slab[(r > radius + 0.3 * (fov - radius)) & (r < fov - 0.2 * (fov - radius))].mean())
    _CALIBRATIONS[key] = (water, air)
    return water, air


def simulate_cbct(
    ct: sitk.Image,
    settings: ConeBeamSettings | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> ConeBeamResult:
    """Simulate a cone-beam CT of ``ct``.

    Args:
        ct: a 3D CT in HU (any pixel type, spacing and direction). The isocentre is the volume's centre and the
            rotation axis its third (slice) axis.
        settings: the scan (default :class:`ConeBeamSettings`).
        progress: called with the fraction done (0..1).
        cancel: polled between stages and during FDK; returning ``True`` stops with :class:`CancelledError`.

    Returns:
        the CBCT in HU and its field-of-view mask, both on the CT's grid, and the run's metadata.

    Raises:
        InputError: not a 3D scalar image, fewer than 2 voxels along an axis, NaN/Inf voxels, or RTK missing.
        CancelledError: ``cancel`` returned ``True``.
    """
    settings = settings or ConeBeamSettings()
    _check_ct(ct)
    rtk_ops.load_rtk()
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]
    done = [0.0]

    def report(fraction: float) -> None:
        if progress is not None and fraction >= done[0]:
            done[0] = fraction
            progress(min(fraction, 1.0))

    def check() -> None:
        if cancel is not None and cancel():
            raise CancelledError("CBCT simulation cancelled")

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 3)
        clock[0] = now

    report(0.0)
    det = settings.detector()
    mu_water = water_mu_per_mm(settings.energy_kev)
    work = work_grid(ct, settings.recon_spacing_mm or AUTO_RECON_SPACING_MM, mu_water)
    volume, spacing, origin = to_rtk_frame(work)
    lap("prepare")
    check()
    report(0.05)

    def after_chunk(fraction: float, start: float = 0.05, share: float = 0.4) -> None:
        report(start + share * fraction)
        check()

    line = rtk_ops.forward_project(volume, spacing, origin, det, settings.views, after_chunk=after_chunk)
    edges = line[:, :, -1:] if det.shift else line[:, :, [0, -1]]
    truncated = bool(edges.max() > 0.05)
    lap("forward_projection")
    dense = None
    if settings.beam_hardening > 0:  # bone and metal, projected on their own for their beam hardening
        dense = rtk_ops.forward_project(
            physics.dense_mu(volume, mu_water), spacing, origin, det, settings.views,
            after_chunk=lambda fraction: after_chunk(fraction, 0.45, 0.05),
        )  # fmt: skip
        lap("dense_projection")
    del volume
    photons = None if settings.mas is None else photons_per_pixel(settings.mas, settings.views, det.pixel)
    measured = detect(
        line, mu_water=mu_water, u_mm=det.u_mm, pixel_mm=det.pixel, spr=settings.scatter_to_primary,
        beam_hardening=settings.beam_hardening, photons=photons, rng=np.random.default_rng(settings.seed),
        dense=dense,
    )  # fmt: skip
    del line, dense
    lap("detector_physics")
    check()
    report(0.5)
    mu_w, mu_air = _calibrate(settings, det, mu_water, (spacing[0], spacing[1]))
    lap("calibration")
    check()
    report(0.55)

    # Reconstruct only the part of the grid inside the FOV's bounding box (RTK frame: x, z across; y the axis).
    reach = (det.fov_radius_mm, det.half_length_mm, det.fov_radius_mm)
    lows, size, crop_origin = [], [], []
    for axis, (n, s, o) in enumerate(zip(rtk_shape(work), spacing, origin)):
        first = max(0, math.floor((-reach[axis] - o) / s) - 1)
        last = min(n - 1, math.ceil((reach[axis] - o) / s) + 1)
        lows.append(first)
        size.append(max(1, last - first + 1))
        crop_origin.append(o + first * s)

    def observe(fraction: float) -> bool:
        report(0.55 + 0.4 * fraction)
        return cancel is not None and bool(cancel())

    try:
        mu = rtk_ops.reconstruct(measured, det, size, spacing, crop_origin, observe=observe)
    except InterruptedError:
        raise CancelledError("CBCT simulation cancelled") from None
    del measured
    lap("fdk")
    fov = rtk_ops.field_of_view(det, settings.views, size, spacing, crop_origin)
    hu = np.clip(1000.0 * (mu - mu_w) / (mu_w - mu_air), *HU_RANGE).astype(np.float32)
    hu[fov == 0] = -1000.0
    image, mask = grid_images(from_rtk_frame(hu, lows, work), from_rtk_frame(fov, lows, work, fill=0), work, ct)
    lap("field_of_view_and_resampling")
    report(1.0)
    metadata = {
        "synthetic": "simulated CBCT",
        "settings": settings.as_dict(),
        "calibration": {"mu_water_per_mm": mu_w, "mu_air_per_mm": mu_air, "mu_water_nominal_per_mm": mu_water},
        "recon_spacing_mm": [round(float(s), 4) for s in work.GetSpacing()],
        "detector": {"columns": det.nu, "rows": det.nv, "lateral_shift_mm": det.shift},
        "photons_per_pixel_per_view": photons,
        "field_of_view_mm": {"diameter": round(2 * det.fov_radius_mm, 1), "length": round(2 * det.half_length_mm, 1)},
        "truncated": truncated,
        "timings_s": timings,
        "rtk_version": rtk_ops.rtk_version(),
    }
    return ConeBeamResult(image=image, field_of_view=mask, metadata=metadata)
