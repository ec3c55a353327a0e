"""Signed-distance shapes and the canvas that paints them into a label map.

Shapes live in an *anatomical* frame (mm, x: patient right -> left, y: anterior -> posterior,
z: inferior -> superior, the same axes as LPS world space before the case's random pose). ``sdf``
returns an approximate signed distance in mm (negative inside): ellipsoids use the first-order
distance ``g / |grad g|``, which is exact on the surface and close to it nearby, so layers of a given
thickness (skull, skin, cortex) can be painted as bands of one field.

Each shape knows its anatomical bounding box, so the canvas evaluates it only on the voxels of that
box: small structures (vessels, lesions, ventricles) cost almost nothing at any volume size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .frame import Frame

BIG = 1e4  # "unbounded" in mm (half-spaces, open cylinders)
_EPS = np.float32(1e-3)


def _vec(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(3)


def rotation(degrees: Iterable[float]) -> np.ndarray:
    """Rotation matrix of the rotations about x, then y, then z (degrees)."""
    ax, ay, az = np.deg2rad(list(degrees))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class Shape(ABC):
    """A solid with an approximate signed distance and an anatomical bounding box ``(lo, hi)``."""

    lo: np.ndarray
    hi: np.ndarray

    @abstractmethod
    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signed distance (mm, negative inside) at anatomical positions (float32 arrays, one shape)."""


class Ellipsoid(Shape):
    """Ellipsoid with semi-axes ``radii``, optionally rotated by ``angles`` (degrees about x, y, z)."""

    def __init__(self, center, radii, angles=(0.0, 0.0, 0.0)) -> None:
        self.c, self.r = _vec(center), _vec(radii)
        self.rot = rotation(angles) if any(angles) else None
        m = np.eye(3) if self.rot is None else self.rot
        half = np.sqrt(((m * self.r[None, :]) ** 2).sum(axis=1))
        self.lo, self.hi = self.c - half, self.c + half

    def sdf(self, x, y, z):
        d = (x - np.float32(self.c[0]), y - np.float32(self.c[1]), z - np.float32(self.c[2]))
        if self.rot is not None:  # body coordinates q = R^T d
            r = self.rot.astype(np.float32)
            d = tuple(r[0, i] * d[0] + r[1, i] * d[1] + r[2, i] * d[2] for i in range(3))
        q2 = sum((di / np.float32(ri)) ** 2 for di, ri in zip(d, self.r, strict=True))
        qr2 = sum((di / np.float32(ri * ri)) ** 2 for di, ri in zip(d, self.r, strict=True))
        q = np.sqrt(q2)
        # g = |q| - 1, |grad g| = |q / r| / |q|; the eps terms give -min(r) at the centre.
        return (q - 1) * (q + _EPS) / (np.sqrt(qr2) + _EPS / np.float32(self.r.min()))


class Capsule(Shape):
    """A tube from ``a`` to ``b`` with radius tapering from ``ra`` to ``rb`` (round ends)."""

    def __init__(self, a, b, ra: float, rb: float | None = None) -> None:
        self.a, self.b = _vec(a), _vec(b)
        self.ra, self.rb = float(ra), float(ra if rb is None else rb)
        rmax = max(self.ra, self.rb)
        self.lo, self.hi = np.minimum(self.a, self.b) - rmax, np.maximum(self.a, self.b) + rmax

    def sdf(self, x, y, z):
        ba = (self.b - self.a).astype(np.float32)
        pa = (x - np.float32(self.a[0]), y - np.float32(self.a[1]), z - np.float32(self.a[2]))
        h = np.clip((pa[0] * ba[0] + pa[1] * ba[1] + pa[2] * ba[2]) / np.float32(ba @ ba + 1e-9), 0, 1)
        dist = np.sqrt((pa[0] - ba[0] * h) ** 2 + (pa[1] - ba[1] * h) ** 2 + (pa[2] - ba[2] * h) ** 2)
        return dist - (np.float32(self.ra) + np.float32(self.rb - self.ra) * h)


def tube(points, radii) -> list[Capsule]:
    """A polyline tube (vessel, bowel) as capsules; ``radii`` is one radius or one per point."""
    pts = [_vec(p) for p in points]
    rs = [float(radii)] * len(pts) if np.isscalar(radii) else [float(r) for r in radii]
    return [Capsule(pts[i], pts[i + 1], rs[i], rs[i + 1]) for i in range(len(pts) - 1)]


class Cylinder(Shape):
    """An elliptic cylinder along z: ellipse ``radii_xy`` around ``center_xy``, between ``z_range``."""

    def __init__(self, center_xy, radii_xy, z_range=(-BIG, BIG)) -> None:
        self.c, self.r, self.zr = np.asarray(center_xy, float), np.asarray(radii_xy, float), z_range
        self.lo = np.array([*(self.c - self.r), z_range[0]])
        self.hi = np.array([*(self.c + self.r), z_range[1]])

    def sdf(self, x, y, z):
        dx, dy = x - np.float32(self.c[0]), y - np.float32(self.c[1])
        rx, ry = np.float32(self.r[0]), np.float32(self.r[1])
        q = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
        qr = np.sqrt((dx / rx**2) ** 2 + (dy / ry**2) ** 2)
        d = (q - 1) * (q + _EPS) / (qr + _EPS / min(rx, ry))
        return np.maximum(d, np.maximum(np.float32(self.zr[0]) - z, z - np.float32(self.zr[1])))


class Plane(Shape):
    """The half-space ``normal . (p - point) <= 0``."""

    def __init__(self, point, normal) -> None:
        self.p, n = _vec(point), _vec(normal)
        self.n = n / np.linalg.norm(n)
        self.lo, self.hi = np.full(3, -BIG), np.full(3, BIG)

    def sdf(self, x, y, z):
        n = self.n.astype(np.float32)
        return (
            n[0] * (x - np.float32(self.p[0])) + n[1] * (y - np.float32(self.p[1])) + n[2] * (z - np.float32(self.p[2]))
        )


class Blob(Shape):
    """A sphere of radius ``radius`` with smooth random bumps (lesions): relative ``roughness``."""

    def __init__(self, center, radius: float, rng: np.random.Generator, roughness: float = 0.15) -> None:
        self.c, self.r = _vec(center), float(radius)
        dirs = rng.normal(size=(3, 3))
        self.k = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * (2 * np.pi / (1.6 * self.r))
        self.amp = rng.uniform(0.3, 1.0, size=3) * roughness / 3 * self.r
        self.phase = rng.uniform(0, 2 * np.pi, size=3)
        reach = self.r + self.amp.sum()
        self.lo, self.hi = self.c - reach, self.c + reach

    def sdf(self, x, y, z):
        d = (x - np.float32(self.c[0]), y - np.float32(self.c[1]), z - np.float32(self.c[2]))
        out = np.sqrt(d[0] ** 2 + d[1] ** 2 + d[2] ** 2) - np.float32(self.r)
        for k, a, ph in zip(self.k.astype(np.float32), self.amp, self.phase, strict=True):
            out -= np.float32(a) * np.sin(k[0] * d[0] + k[1] * d[1] + k[2] * d[2] + np.float32(ph))
        return out


class Union(Shape):
    """Union of shapes; ``k > 0`` blends them smoothly over about ``k`` mm (polynomial smooth minimum)."""

    def __init__(self, *shapes: Shape, k: float = 0.0) -> None:
        self.shapes, self.k = shapes, float(k)
        self.lo = np.min([s.lo for s in shapes], axis=0)
        self.hi = np.max([s.hi for s in shapes], axis=0)

    def sdf(self, x, y, z):
        out = self.shapes[0].sdf(x, y, z)
        for s in self.shapes[1:]:
            d = s.sdf(x, y, z)
            if self.k > 0:
                h = np.maximum(np.float32(self.k) - np.abs(out - d), 0) / np.float32(self.k)
                out = np.minimum(out, d) - h * h * np.float32(self.k / 4)
            else:
                out = np.minimum(out, d)
        return out


class Intersection(Shape):
    """Intersection of shapes (maximum of their distances)."""

    def __init__(self, *shapes: Shape) -> None:
        self.shapes = shapes
        self.lo = np.max([s.lo for s in shapes], axis=0)
        self.hi = np.min([s.hi for s in shapes], axis=0)

    def sdf(self, x, y, z):
        out = self.shapes[0].sdf(x, y, z)
        for s in self.shapes[1:]:
            out = np.maximum(out, s.sdf(x, y, z))
        return out


class Offset(Shape):
    """``shape`` grown by ``distance`` mm (shrunk when negative)."""

    def __init__(self, shape: Shape, distance: float) -> None:
        self.shape, self.d = shape, float(distance)
        self.lo, self.hi = shape.lo - max(self.d, 0), shape.hi + max(self.d, 0)

    def sdf(self, x, y, z):
        return self.shape.sdf(x, y, z) - np.float32(self.d)


class Shell(Shape):
    """The inner layer of ``shape`` that is ``thickness`` mm thick (a wall, a fascial plane)."""

    def __init__(self, shape: Shape, thickness: float) -> None:
        self.shape, self.t = shape, float(thickness)
        self.lo, self.hi = shape.lo, shape.hi

    def sdf(self, x, y, z):
        half = np.float32(self.t / 2)
        return np.abs(self.shape.sdf(x, y, z) + half) - half


@dataclass
class Field:
    """A shape's distance evaluated on the voxel box ``region`` of the canvas."""

    region: tuple[slice, slice, slice]
    values: np.ndarray


class Canvas:
    """A label map (z, y, x) plus the anatomical position of every voxel, painted shape by shape.

    Args:
        frame: the case's pose (voxel grid -> anatomical coordinates).
    """

    def __init__(self, frame: Frame) -> None:
        self.frame = frame
        self.labels = np.zeros(frame.shape_zyx, dtype=np.uint8)
        self.x, self.y, self.z = frame.coordinates()

    def field(self, shape: Shape, pad: float = 0.0) -> Field | None:
        """Evaluate ``shape`` on its bounding box grown by ``pad`` mm (``None`` when off the grid)."""
        region = self.frame.region(shape.lo - pad, shape.hi + pad)
        if region is None:
            return None
        return Field(region, shape.sdf(self.x[region], self.y[region], self.z[region]))

    def paint(
        self,
        label: int,
        shape: Shape | Field | None,
        lo: float = -np.inf,
        hi: float = 0.0,
        where: Iterable[int] | None = None,
    ) -> None:
        """Set ``label`` where ``lo < distance <= hi``, only over current labels in ``where`` (all if ``None``)."""
        f = self.field(shape, pad=max(hi, 0.0)) if isinstance(shape, Shape) else shape
        if f is None:
            return
        inside = f.values <= hi
        if lo > -np.inf:
            inside &= f.values > lo
        target = self.labels[f.region]
        if where is not None:
            allowed = np.zeros(256, dtype=bool)
            allowed[list(where)] = True
            inside &= allowed[target]
        target[inside] = label
