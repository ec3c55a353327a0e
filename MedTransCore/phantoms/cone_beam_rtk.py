"""RTK's part of the cone-beam simulation: the circular geometry, Joseph forward projection, FDK and the scan's FOV.

Volumes here are numpy arrays in RTK's frame, indexed ``[z, y, x]`` with ``y`` the rotation axis, centred on the
isocentre. The projection stack is ``[view, v, u]``: ``u`` across the axis (lateral), ``v`` along it. RTK is
imported lazily (the ``cbct`` extra); with 2 cores, ITK's threads are pinned to the cores this process may use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from ..errors import InputError

# A half-fan scan shifts the panel laterally by this fraction of its width (160 mm of a 400 mm panel, as linacs do),
# leaving a central overlap for RTK's displaced-detector weighting.
HALF_FAN_SHIFT = 0.4
# Before filtering, each row is extended beyond the panel's outer edge(s) by this fraction of its width, falling from
# the edge value to 0 as a cosine: a body wider than the field of view (truncated rows) then gives a bright rim at the
# FOV edge instead of a ramp-filter overshoot; untruncated rows end near 0 and are unchanged. (RTK's own mirroring
# truncation correction biases untruncated water by ~5 %, measured.)
EXTENSION = 0.25
# Hann apodisation of the ramp (cut at Nyquist): the smooth kernel clinical CBCT uses; noise-free edges stay sharp.
HANN_CUT = 1.0


def load_rtk():
    """``(itk, rtk)``; an :class:`InputError` telling how to install them when they are missing."""
    try:
        import itk
        from itk import RTK as rtk
    except ImportError as err:
        raise InputError(
            f'simulating a cone-beam CT needs RTK ({err}); install it with: pip install "medtrans[cbct]"'
        ) from None
    if "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(max(1, cores))
    return itk, rtk


def rtk_version() -> str:
    try:
        return metadata.version("itk-rtk")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Detector:
    """The flat panel and its place in the circular trajectory (all mm; ``u``/``v`` at the detector plane)."""

    sid: float
    sdd: float
    nu: int
    nv: int
    pixel: float
    shift: float  # lateral panel offset (half fan), mm

    @property
    def u0(self) -> float:
        return -(self.nu - 1) / 2 * self.pixel + self.shift

    @property
    def v0(self) -> float:
        return -(self.nv - 1) / 2 * self.pixel

    @property
    def u_mm(self) -> np.ndarray:
        return self.u0 + self.pixel * np.arange(self.nu)

    @property
    def v_mm(self) -> np.ndarray:
        return self.v0 + self.pixel * np.arange(self.nv)

    @property
    def fov_radius_mm(self) -> float:
        """Radius of the reconstructable cylinder: every view's fan covers it (a half fan covers half, twice)."""
        edge = (self.nu - 0.5) * self.pixel / 2 + abs(self.shift)
        return self.sid * math.sin(math.atan2(edge, self.sdd))

    @property
    def half_length_mm(self) -> float:
        """Half the axial reach of the cone at the FOV's far side: a bound of the reconstructable length."""
        return (self.nv * self.pixel / 2) * (self.sid + self.fov_radius_mm) / self.sdd


def angles(views: int) -> np.ndarray:
    """Gantry angles (degrees) of a full 360 degree rotation."""
    return np.arange(views) * (360.0 / views)


def _geometry(rtk, det: Detector, gantry: np.ndarray):
    geometry = rtk.ThreeDCircularProjectionGeometry.New()
    for angle in gantry:
        geometry.AddProjection(det.sid, det.sdd, float(angle))
    return geometry


def _image(itk, array: np.ndarray, spacing, origin):
    image = itk.image_from_array(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    return image


def _stack(itk, rtk, det: Detector, count: int, constant: float = 0.0):
    source = rtk.ConstantImageSource[itk.Image[itk.F, 3]].New()
    source.SetOrigin([det.u0, det.v0, 0.0])
    source.SetSpacing([det.pixel, det.pixel, 1.0])
    source.SetSize([int(det.nu), int(det.nv), int(count)])
    source.SetConstant(constant)
    return source


def forward_project(
    volume: np.ndarray,
    spacing,
    origin,
    det: Detector,
    views: int,
    *,
    chunks: int = 8,
    after_chunk: Callable[[float], None] | None = None,
) -> np.ndarray:
    """Joseph line integrals of ``volume`` (1/mm, RTK frame) for every view: ``(views, nv, nu)`` float32.

    Args:
        volume: attenuation ``[z, y, x]`` (RTK frame).
        spacing: its voxel size ``(x, y, z)`` mm.
        origin: its first voxel's position ``(x, y, z)`` mm (isocentre at 0).
        det: the panel.
        views: projections over 360 degrees.
        chunks: views are projected in this many groups; ``after_chunk(fraction done)`` runs between them (progress,
            cancellation).
    """
    itk, rtk = load_rtk()
    image_type = itk.Image[itk.F, 3]
    image = _image(itk, volume, spacing, origin)
    gantry = angles(views)
    out = np.empty((views, det.nv, det.nu), dtype=np.float32)
    bounds = np.linspace(0, views, min(chunks, views) + 1).round().astype(int)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        stack = _stack(itk, rtk, det, stop - start)  # keep the source alive: its output is filled on Update
        projector = rtk.JosephForwardProjectionImageFilter[image_type, image_type].New()
        projector.SetInput(0, stack.GetOutput())
        projector.SetInput(1, image)
        projector.SetGeometry(_geometry(rtk, det, gantry[start:stop]))
        projector.Update()
        out[start:stop] = itk.array_view_from_image(projector.GetOutput())
        if after_chunk is not None:
            after_chunk(stop / views)
    return out


def extend_rows(projections: np.ndarray, det: Detector) -> tuple[np.ndarray, float]:
    """``(projections extended laterally, new u origin)``: see :data:`EXTENSION` (half fan: the outer edge only)."""
    pad = max(1, round(EXTENSION * det.nu))
    taper = (0.5 + 0.5 * np.cos(np.pi * (np.arange(1, pad + 1) / pad))).astype(np.float32)  # 1 -> 0
    right = projections[:, :, -1:] * taper
    if det.shift:
        return np.concatenate([projections, right], axis=2), det.u0
    left = projections[:, :, :1] * taper[::-1]
    return np.concatenate([left, projections, right], axis=2), det.u0 - pad * det.pixel


def reconstruct(
    projections: np.ndarray,
    det: Detector,
    size,
    spacing,
    origin,
    *,
    observe: Callable[[float], bool] | None = None,
) -> np.ndarray:
    """FDK (Hann-apodised ramp) of ``projections`` onto a grid in RTK's frame; ``[z, y, x]`` float32 (1/mm).

    A shifted panel (half fan) gets RTK's displaced-detector weighting first: ``FDKConeBeamReconstructionFilter``
    does not apply it by itself (without it the overlap is counted twice).

    Args:
        projections: ``(views, nv, nu)`` measured line integrals over 360 degrees.
        det: the panel.
        size, spacing, origin: the reconstruction grid ``(x, y, z)``.
        observe: called with FDK's progress (0..1); returning ``True`` aborts the reconstruction.

    Raises:
        InterruptedError: ``observe`` asked to stop.
    """
    itk, rtk = load_rtk()
    image_type = itk.Image[itk.F, 3]
    views = projections.shape[0]
    geometry = _geometry(rtk, det, angles(views))
    extended, u0 = extend_rows(projections, det)
    stack = _image(itk, extended, (det.pixel, det.pixel, 1.0), (u0, det.v0, 0.0))
    del extended
    if det.shift:
        displaced = rtk.DisplacedDetectorImageFilter[image_type].New()
        displaced.SetInput(stack)
        displaced.SetGeometry(geometry)
        displaced.Update()
        stack = displaced.GetOutput()
    volume = rtk.ConstantImageSource[image_type].New()
    volume.SetOrigin([float(o) for o in origin])
    volume.SetSpacing([float(s) for s in spacing])
    volume.SetSize([int(n) for n in size])
    fdk = rtk.FDKConeBeamReconstructionFilter[image_type].New()
    fdk.SetInput(0, volume.GetOutput())
    fdk.SetInput(1, stack)
    fdk.SetGeometry(geometry)
    fdk.GetRampFilter().SetHannCutFrequency(HANN_CUT)
    stopped = []
    if observe is not None:

        def on_progress() -> None:
            if not stopped and observe(fdk.GetProgress()):
                stopped.append(True)
                fdk.AbortGenerateDataOn()

        fdk.AddObserver(itk.ProgressEvent(), on_progress)
    try:
        fdk.Update()
    except RuntimeError:
        if stopped:
            raise InterruptedError("FDK aborted") from None
        raise
    return itk.array_from_image(fdk.GetOutput()).astype(np.float32)


def field_of_view(det: Detector, views: int, size, spacing, origin) -> np.ndarray:
    """uint8 ``[z, y, x]`` mask of the grid's voxels that every view (or, half fan, every opposed pair) sees."""
    itk, rtk = load_rtk()
    image_type = itk.Image[itk.F, 3]
    ones = rtk.ConstantImageSource[image_type].New()
    ones.SetOrigin([float(o) for o in origin])
    ones.SetSpacing([float(s) for s in spacing])
    ones.SetSize([int(n) for n in size])
    ones.SetConstant(1.0)
    fov = rtk.FieldOfViewImageFilter[image_type, image_type].New()
    fov.SetInput(ones.GetOutput())
    stack = _stack(itk, rtk, det, views)
    stack.UpdateOutputInformation()  # the filter reads the panel's extent, never its pixels
    fov.SetProjectionsStack(stack.GetOutput())
    fov.SetGeometry(_geometry(rtk, det, angles(views)))
    fov.SetDisplacedDetector(bool(det.shift))
    fov.Update()
    return (itk.array_from_image(fov.GetOutput()) > 0.5).astype(np.uint8)
