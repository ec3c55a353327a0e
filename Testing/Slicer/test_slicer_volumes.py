"""MRML volume node <-> SimpleITK image conversion and input checks, on real MRML nodes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from MedTransCore.errors import InputError
from MedTransSlicerLib import volumes

from .helpers import addVolume, headArray, nodeArray, nodeMatrix, obliqueMatrix


def test_a_volume_node_becomes_an_image_whose_voxels_sit_at_the_same_lps_points(scene, source):
    image = volumes.imageFromVolume(source)
    matrix = obliqueMatrix()
    assert image.GetSize() == (22, 24, 20)
    np.testing.assert_allclose(image.GetSpacing(), (0.9, 1.3, 2.7), atol=1e-12)
    for index in [(0, 0, 0), (21, 0, 0), (3, 17, 11), (21, 23, 19)]:
        ras = matrix @ [*index, 1.0]
        lps = np.array([-ras[0], -ras[1], ras[2]])
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index), lps, atol=1e-9)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), headArray())


def test_an_image_geometry_converts_back_to_the_same_ijk_to_ras_matrix(source):
    image = volumes.imageFromVolume(source)
    np.testing.assert_allclose(volumes.ijkToRasFromImage(image), obliqueMatrix(), atol=1e-12)


def test_a_new_volume_node_gets_the_given_matrix_exactly_and_a_copy_of_the_array(scene):
    array = headArray()
    node = volumes.addVolumeNode(scene, array, obliqueMatrix(), "copy")
    array[0, 0, 0] = 5.0
    np.testing.assert_array_equal(nodeMatrix(node), obliqueMatrix())
    assert nodeArray(node)[0, 0, 0] == -1000.0
    assert node.GetDisplayNode() is not None


def test_reading_a_volume_leaves_its_voxels_untouched(source):
    array = volumes.arrayFromVolume(source)
    array[:] = 0
    np.testing.assert_array_equal(nodeArray(source), headArray())


def test_a_node_under_a_linear_transform_is_expressed_in_the_frame_of_another(scene, source):
    moved = addVolume(scene, headArray(), np.diag([1.0, 1.0, 1.0, 1.0]), "moved")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    toParent = vtkMatrix4x4()
    toParent.SetElement(0, 3, 5.0)
    toParent.SetElement(2, 3, -2.0)
    transform.SetMatrixTransformToParent(toParent)
    moved.SetAndObserveTransformNodeID(transform.GetID())
    expected = np.diag([1.0, 1.0, 1.0, 1.0])
    expected[:3, 3] = [5.0, 0.0, -2.0]
    np.testing.assert_allclose(volumes.ijkToRasInFrameOf(moved, source), expected, atol=1e-12)


def test_a_non_linear_transform_between_two_nodes_is_refused(scene, source):
    bent = addVolume(scene, headArray(), np.eye(4), "bent")
    grid = scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    bent.SetAndObserveTransformNodeID(grid.GetID())
    with pytest.raises(InputError, match="non-linear"):
        volumes.ijkToRasInFrameOf(bent, source)


def _emptyVolume(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    node.SetAndObserveImageData(vtkImageData())
    return node


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda scene: scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "no image"), "empty"),
        (_emptyVolume, "empty"),
        (lambda scene: addVolume(scene, headArray((1, 24, 22)), np.eye(4), "slice"), "2D"),
        (lambda scene: addVolume(scene, headArray(), np.eye(4), "labels", "vtkMRMLLabelMapVolumeNode"), "label map"),
        (lambda scene: scene.AddNewNodeByClass("vtkMRMLModelNode", "mesh"), "not a scalar volume"),
    ],
)
def test_volumes_that_cannot_be_translated_are_refused_with_a_reason(scene, make, message):
    with pytest.raises(InputError, match=message):
        volumes.checkScalarVolume(make(scene), "source")


def test_a_multi_component_volume_is_refused(scene):
    node = addVolume(scene, headArray(), np.eye(4), "rgb")
    image = node.GetImageData()
    scalars = np.repeat(headArray().reshape(-1, 1), 3, axis=1)
    from vtkmodules.util import numpy_support

    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(scalars, deep=True))
    with pytest.raises(InputError, match="3 components"):
        volumes.checkScalarVolume(node, "reference")
