"""Helpers of the Slicer extension tests: small volumes and plain-VTK node access (independent of the code under test)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

MODULE_DIR = Path(__file__).resolve().parents[2] / "MedTransSlicer"
sys.path.insert(0, str(MODULE_DIR))

from vtkmodules.util import numpy_support  # noqa: E402
from vtkmodules.vtkCommonDataModel import vtkImageData  # noqa: E402
from vtkmodules.vtkCommonMath import vtkMatrix4x4  # noqa: E402

# The shipped identity baseline: the synthetic volume equals the source, so results are predictable.
IDENTITY = "identity"


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about axis 0 (x), 1 (y) or 2 (z)."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def obliqueMatrix(spacing=(0.9, 1.3, 2.7), origin=(12.5, -30.25, 47.0)) -> np.ndarray:
    """An oblique, anisotropic IJK-to-RAS matrix (rotated about two axes)."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation(2, 17.0) @ rotation(0, -9.0) @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def headArray(shape=(20, 24, 22)) -> np.ndarray:
    """A CT-like (Z, Y, X) float32 phantom in HU: air, a soft-tissue ellipsoid, a bone shell, a dense core."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt((x / 0.8) ** 2 + (y / 0.75) ** 2 + (z / 0.85) ** 2)
    array = np.full(shape, -1000.0, dtype=np.float32)
    array[radius < 1.0] = 700.0
    array[radius < 0.85] = 35.0
    array[(np.abs(x - 0.2) < 0.15) & (np.abs(y) < 0.2) & (np.abs(z) < 0.3)] = 300.0
    return array


def addVolume(scene, array: np.ndarray, matrix: np.ndarray, name: str, className: str = "vtkMRMLScalarVolumeNode"):
    """A volume node built with plain VTK calls (independent of the code under test)."""
    image = vtkImageData()
    image.SetDimensions(array.shape[2], array.shape[1], array.shape[0])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    node = scene.AddNewNodeByClass(className, name)
    vtkMatrix = vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vtkMatrix.SetElement(r, c, matrix[r, c])
    node.SetIJKToRASMatrix(vtkMatrix)
    node.SetAndObserveImageData(image)
    node.CreateDefaultDisplayNodes()
    return node


def nodeMatrix(node) -> np.ndarray:
    vtkMatrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(vtkMatrix)
    return np.array([[vtkMatrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def nodeArray(node) -> np.ndarray:
    image = node.GetImageData()
    x, y, z = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(z, y, x).copy()


def nodeIDs(scene) -> set[str]:
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def saveCbctOnlyBundle(folder: Path):
    """A real (identity-family) bundle on disk that only knows CBCT -> CT: asking it for more is unsupported."""
    import torch

    from MedTransCore.bundles import save_bundle

    metadata = {
        "name": "cbct-only",
        "family": "identity",
        "version": "0.0.1",
        "description": "test bundle with one pair",
        "modalities": ["CT", "CBCT"],
        "pairs": [["CBCT", "CT"]],
        "spacing": None,
        "grid": None,
        "normalisation": {"scheme": "MedTransCore.modalities"},
        "sampler": None,
        "network": {},
        "training": {},
        "metrics": {},
        "licence": "Apache-2.0",
    }
    return save_bundle(folder / "cbct-only", metadata, {"model.safetensors": {"w": torch.zeros(1)}})
