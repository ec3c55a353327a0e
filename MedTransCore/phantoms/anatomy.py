"""Label maps of the phantom anatomies: one registry, one pose per case, one canvas painted per anatomy."""

from __future__ import annotations

import numpy as np

from . import abdomen, head, pelvis
from .frame import Frame
from .shapes import Canvas

# anatomy -> module with HALF_EXTENT (mm around CENTRE, inf = unbounded), CENTRE (anatomical mm that lands
# at the volume centre), MAX_SHIFT (mm of random shift per axis) and build(canvas, rng) -> drawn parameters;
# optionally CT_NOISE_HU, the range of its CT noise
_BUILDERS = {"head": head, "pelvis": pelvis, "abdomen": abdomen}
ANATOMIES: tuple[str, ...] = tuple(_BUILDERS)
DEFAULT_CT_NOISE_HU = (4.0, 10.0)


def ct_noise_hu(anatomy: str) -> tuple[float, float]:
    """Range (HU) of the white-noise standard deviation of a diagnostic CT of ``anatomy``."""
    return getattr(_BUILDERS[anatomy], "CT_NOISE_HU", DEFAULT_CT_NOISE_HU)


def make_labels(
    anatomy: str, shape_xyz: tuple[int, int, int], spacing: tuple[float, float, float], rng: np.random.Generator
) -> tuple[np.ndarray, dict]:
    """Draw one case of ``anatomy`` on the grid.

    Args:
        anatomy: one of ``ANATOMIES``.
        shape_xyz: voxels along (x, y, z).
        spacing: mm along (x, y, z).
        rng: the case's geometry stream.

    Returns:
        ``(labels, info)``: uint8 label map shaped (z, y, x) and the drawn parameters (JSON-ready).
    """
    module = _BUILDERS[anatomy]
    frame = Frame.sample(shape_xyz, spacing, module.HALF_EXTENT, rng, centre=module.CENTRE, max_shift=module.MAX_SHIFT)
    canvas = Canvas(frame)
    info = module.build(canvas, rng)
    info["scale"] = round(frame.scale, 3)
    return canvas.labels, info
