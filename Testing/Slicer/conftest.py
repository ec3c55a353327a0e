"""Fixtures of the Slicer extension tests: real MRML scenes through the slicer-core wheel (no mocks), small volumes."""

from __future__ import annotations

import pytest
import slicer

from .helpers import addVolume, headArray, obliqueMatrix


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


@pytest.fixture
def source(scene):
    return addVolume(scene, headArray(), obliqueMatrix(), "patient CBCT")


@pytest.fixture
def logic(scene):
    from MedTransSlicerLib import MedTransLogic

    return MedTransLogic(scene)
