"""MRML scalar volume nodes <-> numpy arrays and SimpleITK images, geometry kept exactly.

MRML stores a volume's geometry as one IJK-to-RAS matrix; SimpleITK as spacing, origin and a direction
matrix in LPS. RAS and LPS differ by the sign of the first two axes, so ``origin_LPS = F @ t_RAS`` and
``direction_LPS * spacing = F @ M_RAS`` with ``F = diag(-1, -1, 1)``. No ``sitkUtils``: these helpers run in
desktop Slicer, in the browser front end and in tests through the ``slicer-core`` wheel.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from MedTransCore.domain import PHANTOM_MARKER, domain_hints
from MedTransCore.errors import InputError

#: Node attribute that keeps a simulated phantom recognisable (its marker goes into the exported file's notes).
PHANTOM_NOTE_ATTRIBUTE = "MedTrans.PhantomNote"

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def matrixToArray(matrix: vtkMatrix4x4) -> np.ndarray:
    """A ``vtkMatrix4x4`` as a (4, 4) float64 array."""
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def arrayToMatrix(array: np.ndarray) -> vtkMatrix4x4:
    """A (4, 4) array as a new ``vtkMatrix4x4``."""
    matrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijkToRas(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """The node's own IJK-to-RAS matrix (4, 4), without parent transforms."""
    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return matrixToArray(matrix)


def ijkToRasInFrameOf(node: slicer.vtkMRMLVolumeNode, frameNode: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    """IJK-to-RAS of ``node`` expressed in the coordinate frame ``frameNode`` lives in.

    Two volumes under different (linear) parent transforms are compared in one frame this way.

    Raises:
        InputError: a non-linear transform lies between the two nodes.
    """
    between = vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
        node.GetParentTransformNode(), frameNode.GetParentTransformNode(), between
    ):
        raise InputError(
            f"{node.GetName()!r} is under a non-linear transform; harden it (Transforms module) before comparing"
        )
    return matrixToArray(between) @ ijkToRas(node)


def geometryFromIjkToRas(matrix: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """SimpleITK ``(spacing, origin, direction)`` (LPS, direction flattened row-major) of an IJK-to-RAS matrix."""
    linear = LPS_FROM_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    direction = linear / spacing
    origin = LPS_FROM_RAS @ matrix[:3, 3]
    return tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist())


def ijkToRasFromImage(image: sitk.Image) -> np.ndarray:
    """IJK-to-RAS matrix (4, 4) of a 3D SimpleITK image: the inverse of :func:`geometryFromIjkToRas`."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_FROM_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_FROM_RAS @ np.asarray(image.GetOrigin(), dtype=float)
    return matrix


def checkScalarVolume(node, role: str = "source") -> None:
    """Raise ``InputError`` unless ``node`` is a non-empty 3D single-component intensity volume.

    Args:
        node: the candidate MRML node.
        role: how the message names it (``"source"``, ``"reference"``).
    """
    if node is None:
        raise InputError(f"choose a {role} volume")
    name = node.GetName() if hasattr(node, "GetName") else str(node)
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{role} {name!r} is not a scalar volume")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"{role} {name!r} is a label map (a segmentation), not an image; choose an intensity volume")
    if node.IsA("vtkMRMLVectorVolumeNode") or node.IsA("vtkMRMLTensorVolumeNode"):
        raise InputError(f"{role} {name!r} is a vector/tensor volume; choose a scalar intensity volume")
    image = node.GetImageData()
    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"{role} {name!r} is empty (it has no voxels); load or select an image volume")
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"{role} {name!r} has {scalars.GetNumberOfComponents()} components per voxel; expected 1")
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise InputError(f"{role} {name!r} is {'x'.join(map(str, dims))}: a 2D image; MedTrans translates 3D volumes")


def arrayFromVolume(node: slicer.vtkMRMLScalarVolumeNode) -> np.ndarray:
    """A copy of the node's voxels as a (Z, Y, X) array in their stored type (the node is not touched)."""
    image = node.GetImageData()
    x, y, z = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(z, y, x).copy()


def imageFromVolume(node: slicer.vtkMRMLScalarVolumeNode, matrix: np.ndarray | None = None) -> sitk.Image:
    """The node as a SimpleITK image with its exact geometry (and a phantom's marker, see :func:`markPhantom`).

    Args:
        node: a checked scalar volume (see :func:`checkScalarVolume`).
        matrix: IJK-to-RAS to use instead of the node's own (e.g. from :func:`ijkToRasInFrameOf`).
    """
    image = sitk.GetImageFromArray(arrayFromVolume(node))
    spacing, origin, direction = geometryFromIjkToRas(ijkToRas(node) if matrix is None else matrix)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    note = node.GetAttribute(PHANTOM_NOTE_ATTRIBUTE)
    if note:  # written into the exported file's notes, where the core's domain check reads it
        image.SetMetaData("ITK_FileNotes", note)
    return image


def markPhantom(node: slicer.vtkMRMLScalarVolumeNode, metadata) -> bool:
    """Keep a simulated phantom recognisable as one once it is a node (the core picks phantom models only for it).

    Args:
        node: the volume made from the image.
        metadata: the image (``SimpleITK.Image``) or its file's ``{key: value}`` metadata.

    Returns:
        whether the image carried the phantom marker (then the node has :data:`PHANTOM_NOTE_ATTRIBUTE`).
    """
    hints = domain_hints(metadata)
    if hints.get("phantom"):
        node.SetAttribute(PHANTOM_NOTE_ATTRIBUTE, f"{PHANTOM_MARKER} {hints.get('anatomy', '')}".strip())
    return bool(hints)


def addVolumeNode(
    scene: slicer.vtkMRMLScene,
    array: np.ndarray,
    matrix: np.ndarray,
    name: str,
    parentTransformID: str | None = None,
) -> slicer.vtkMRMLScalarVolumeNode:
    """Add a scalar volume node holding a copy of ``array`` (Z, Y, X) with IJK-to-RAS ``matrix``.

    The matrix is set as given, so a result made with its source's matrix has exactly its geometry.
    """
    array = np.ascontiguousarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a (Z, Y, X) array, got shape {array.shape}")
    image = vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    image.GetPointData().SetScalars(scalars)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetIJKToRASMatrix(arrayToMatrix(matrix))
    node.SetAndObserveImageData(image)
    node.SetAndObserveTransformNodeID(parentTransformID)
    node.CreateDefaultDisplayNodes()
    return node
