"""The dose check over the browser's synthetic view: the sCT dose as a colour wash, or the gamma map.

Label layers like the difference overlay (:mod:`.difference_overlay`, which says why a label map). The dose is
quantised into :data:`LEVELS` steps from :data:`LOW` of its maximum up, blue (low) to red (high), half transparent;
doses below :data:`LOW` of the maximum are not drawn. The gamma index 0..2 runs green (pass) to red (fail), its
unevaluated voxels (below the low-dose threshold) transparent.
"""

from __future__ import annotations

import colorsys

import numpy as np
import slicer

from .difference_overlay import colour_table, label_map_like
from .slicer_logic import volumes

LEVELS = 255
LOW = 0.1  # share of the maximum dose below which nothing is drawn (the low-dose threshold of the gamma too)
ALPHA = 0.55
ROLE = "dose overlay colours"


def dose_labels(dose: np.ndarray, top: float) -> np.ndarray:
    """``dose`` as labels: 0 below ``LOW * top``, else 1..255 over ``[LOW * top, top]`` (clipped above)."""
    if top <= 0:
        raise ValueError(f"the dose wash needs a positive maximum dose, got {top}")
    share = np.nan_to_num(np.asarray(dose, dtype=np.float64) / top)
    steps = np.clip(np.rint(1 + (share - LOW) / (1 - LOW) * (LEVELS - 1)), 1, LEVELS).astype(np.uint8)
    return np.where(share < LOW, 0, steps).astype(np.uint8)


def dose_colour(label: int) -> tuple[float, float, float, float]:
    """RGBA of a label: transparent for 0, else blue (low) to red (high), half transparent."""
    if label == 0:
        return 0.0, 0.0, 0.0, 0.0
    t = (label - 1) / (LEVELS - 1)
    return (*colorsys.hsv_to_rgb(0.66 * (1.0 - t), 1.0, 1.0), ALPHA)


def add_dose_overlay_node(scene: slicer.vtkMRMLScene, dose_node) -> slicer.vtkMRMLLabelMapVolumeNode:
    """A label map of ``dose_node`` (its own geometry: the CT's) with the dose colours."""
    dose = volumes.arrayFromVolume(dose_node)
    colours = colour_table(scene, ROLE, "MedTrans dose wash", LEVELS + 1, dose_colour)
    labels = dose_labels(dose, max(float(np.nanmax(dose)), 1e-6))
    return label_map_like(scene, labels, dose_node, f"{dose_node.GetName()} (wash)", colours)


GAMMA_MAX = 2.0
GAMMA_ROLE = "gamma overlay colours"


def gamma_labels(gamma: np.ndarray) -> np.ndarray:
    """``gamma`` (0..2; NaN or negative where not evaluated) as labels 1..255; 0 where not evaluated."""
    values = np.asarray(gamma, dtype=np.float64)
    steps = np.clip(np.rint(1 + np.nan_to_num(values) / GAMMA_MAX * (LEVELS - 1)), 1, LEVELS).astype(np.uint8)
    return np.where(np.isnan(values) | (values < 0), 0, steps).astype(np.uint8)


def gamma_colour(label: int) -> tuple[float, float, float, float]:
    """RGBA of a gamma label: transparent for 0; green up to gamma 1 (pass), then yellow to red (fail)."""
    if label == 0:
        return 0.0, 0.0, 0.0, 0.0
    gamma = (label - 1) / (LEVELS - 1) * GAMMA_MAX
    if gamma <= 1.0:
        return 0.1, 0.75, 0.25, 0.45
    t = min(gamma - 1.0, 1.0)
    return 1.0, 0.9 * (1.0 - t), 0.0, 0.8


def add_gamma_overlay_node(scene: slicer.vtkMRMLScene, gamma_node) -> slicer.vtkMRMLLabelMapVolumeNode:
    """A label map of ``gamma_node`` (its own grid: the dose grid) with the gamma colours."""
    colours = colour_table(scene, GAMMA_ROLE, "MedTrans gamma overlay", LEVELS + 1, gamma_colour)
    labels = gamma_labels(volumes.arrayFromVolume(gamma_node))
    return label_map_like(scene, labels, gamma_node, f"{gamma_node.GetName()} (overlay)", colours)
