"""The difference overlay as the browser shows it: transparent where synthetic and reference agree.

Slicer's scalar-volume display replaces a colour table's alpha by its threshold mask, so the logic's difference node
shown as a foreground layer tints every voxel, zero included. The page instead shows a label-map copy of it (label
layers keep their colour table's alpha): the signed difference quantised into :data:`LEVELS` steps of a
blue-transparent-red scale over ``[-span, +span]``, label 0 (no difference) fully transparent. The difference node
itself, its window and the metrics are untouched.
"""

from __future__ import annotations

import numpy as np
import slicer
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData

from .slicer_logic import volumes

LEVELS = 127  # steps on each side of zero; labels 1..255, 128 = zero
ZERO_LABEL = LEVELS + 1
MAX_ALPHA = 0.85
# Differences smaller than this share of the scale are not drawn (noise where the volumes agree).
DEAD_ZONE = 0.04
COLOR_NAME = "MedTrans difference overlay"
ROLE_ATTRIBUTE = "MedTrans.Role"
ROLE = "difference overlay colours"


def difference_labels(difference: np.ndarray, span: float) -> np.ndarray:
    """``difference`` as labels: 0 where it rounds to zero, else ``128 + round(127 * d / span)`` clipped to 1..255.

    Args:
        difference: synthetic minus reference (any shape); NaN counts as no difference.
        span: the half-width of the scale (the difference node's window / 2), > 0.
    """
    if span <= 0:
        raise ValueError(f"the difference scale needs a positive span, got {span}")
    scaled = np.nan_to_num(np.asarray(difference, dtype=np.float64) / span * LEVELS)
    steps = np.clip(np.rint(scaled), -LEVELS, LEVELS).astype(np.int16)
    return np.where(steps == 0, 0, steps + ZERO_LABEL).astype(np.uint8)


def label_colour(label: int) -> tuple[float, float, float, float]:
    """RGBA of a label: blue below zero, red above, more opaque the larger the difference; transparent for label 0
    and within :data:`DEAD_ZONE` of zero."""
    if label == 0:
        return 0.0, 0.0, 0.0, 0.0
    t = (label - ZERO_LABEL) / LEVELS  # -1 .. 1
    red, green, blue = (1.0, 1.0 - t, 1.0 - t) if t >= 0 else (1.0 + t, 1.0 + t, 1.0)
    if abs(t) < DEAD_ZONE:
        return red, green, blue, 0.0
    return red, green, blue, MAX_ALPHA * min(1.0, 0.2 + 1.5 * abs(t))


def colour_node(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """The scene's colour table of the overlay labels (made once, then reused)."""
    return colour_table(scene, ROLE, COLOR_NAME, 2 * LEVELS + 2, label_colour)


def colour_table(scene: slicer.vtkMRMLScene, role: str, name: str, count: int, colour) -> slicer.vtkMRMLColorTableNode:
    """The scene's colour table of ``role`` (made once with ``colour(label) -> RGBA`` for ``count`` labels)."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
        if node.GetAttribute(ROLE_ATTRIBUTE) == role:
            return node
    node = scene.CreateNodeByClass("vtkMRMLColorTableNode")
    node.SetName(name)
    node.SetTypeToUser()
    node.SetNumberOfColors(count)
    for label in range(count):
        node.SetColor(label, str(label), *colour(label))
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    scene.AddNode(node)
    return node


def label_map_like(scene: slicer.vtkMRMLScene, labels: np.ndarray, like, name: str, colours):
    """A label map of ``labels`` (Z, Y, X) with the geometry of volume node ``like``, shown with ``colours``."""
    image = vtkImageData()
    image.SetDimensions(labels.shape[2], labels.shape[1], labels.shape[0])
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(labels).ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    node.SetIJKToRASMatrix(volumes.arrayToMatrix(volumes.ijkToRas(like)))
    node.SetAndObserveImageData(image)
    node.SetAndObserveTransformNodeID(like.GetTransformNodeID())
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetAndObserveColorNodeID(colours.GetID())
    return node


def add_overlay_node(scene: slicer.vtkMRMLScene, difference_node) -> slicer.vtkMRMLLabelMapVolumeNode:
    """A label map of ``difference_node`` (same geometry) for the label layer, with the overlay colours."""
    span = difference_node.GetDisplayNode().GetWindow() / 2
    labels = difference_labels(volumes.arrayFromVolume(difference_node), max(span, 1e-6))
    return label_map_like(scene, labels, difference_node, f"{difference_node.GetName()} (overlay)", colour_node(scene))
