"""Pre-filling the source modality from DICOM tags, descriptions and intensities."""

from __future__ import annotations

import numpy as np
import pytest

from MedTransSlicerLib import guessModality, guessModalityOfNode

from .helpers import addVolume, headArray


@pytest.mark.parametrize(
    ("description", "dicom", "expected"),
    [
        ("3: CBCT pelvis", "CT", "CBCT"),
        ("Cone Beam CT", None, "CBCT"),
        ("Abdomen arterial phase", "CT", "CT_ARTERIAL"),
        ("PV phase portal venous", "CT", "CT_VENOUS"),
        ("Head 2.5mm", "CT", "CT"),
        ("AX T2 FLAIR", "MR", "MR_FLAIR"),
        ("T1 post Gd", "MR", "MR_T1C"),
        ("t1ce", None, "MR_T1C"),
        ("sag T1 MPRAGE", "MR", "MR_T1"),
        ("AX T2 TSE", "MR", "MR_T2"),
        ("PD SPACE", "MR", "MR_PD"),
        ("localizer", "MR", "MR_T1"),
        ("arterial", "MR", "MR_T1"),
    ],
)
def test_tags_and_descriptions_decide_the_modality(description, dicom, expected):
    assert guessModality(description, dicom) == expected


def test_intensities_decide_when_nothing_else_does():
    assert guessModality("volume", None, headArray()) == "CT"
    assert guessModality("volume", None, np.abs(headArray()) / 10) == "MR_T1"
    assert guessModality("volume", None, None) is None


def test_a_node_from_dicom_is_guessed_from_its_subject_hierarchy_modality(scene):
    import slicer

    node = addVolume(scene, np.abs(headArray()), np.eye(4), "2: Series")
    assert guessModalityOfNode(node) == "MR_T1"
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.ResolveSubjectHierarchy(scene)
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    hierarchy.SetItemAttribute(item, "DICOM.Modality", "CT")
    assert guessModalityOfNode(node) == "CT"
