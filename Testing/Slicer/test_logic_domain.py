"""The default model follows what the volume is, in Slicer too: a phantom stays a phantom on its way to the core
(node attribute -> exported file's notes), and without a named model the core, which sees the voxels, chooses."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.domain import domain_hints
from MedTransCore.errors import InputError
from MedTransCore.phantoms import generate_phantom
from MedTransSlicerLib import volumes

from .helpers import addVolume


@pytest.fixture(scope="module")
def phantom():
    return generate_phantom(anatomy="head", seed=3, shape=(24, 24, 24), spacing=(6.0, 6.0, 6.0), modalities=["CBCT"])


def node_of(scene, image: sitk.Image, name: str):
    return volumes.addVolumeNode(scene, sitk.GetArrayFromImage(image), volumes.ijkToRasFromImage(image), name)


def test_a_phantom_node_keeps_its_marker_in_the_image_the_core_receives(scene, phantom):
    node = node_of(scene, phantom.images["CBCT"], "demo CBCT")
    assert volumes.markPhantom(node, phantom.images["CBCT"])
    assert domain_hints(volumes.imageFromVolume(node)) == {"phantom": True, "anatomy": "head"}


def test_a_volume_without_the_marker_is_not_a_phantom(scene, phantom):
    plain = sitk.GetImageFromArray(sitk.GetArrayFromImage(phantom.images["CBCT"]))  # same voxels, no notes
    node = node_of(scene, plain, "patient CBCT")
    assert not volumes.markPhantom(node, plain)
    assert domain_hints(volumes.imageFromVolume(node)) == {}


def test_without_a_named_model_the_run_leaves_the_choice_to_the_core(logic):
    assert logic._checkModel("CBCT", "CT", None) is None
    assert logic._checkModel("CBCT", "CT", "identity").endswith("identity")
    with pytest.raises(InputError, match="does not support"):
        logic._checkModel("CBCT", "CT", "phantom-head-aldm")


@pytest.mark.slow
def test_a_marked_phantom_translates_with_the_default_model_and_an_unmarked_one_is_refused(scene, logic, phantom):
    image = phantom.images["CBCT"]
    marked = node_of(scene, image, "demo CBCT")
    volumes.markPhantom(marked, image)
    outputs = logic.translate(marked, "CBCT", "CT")
    assert outputs.settings["input_domain"]["kind"] == "phantom"
    assert outputs.settings["model"] != "identity"
    unmarked = addVolume(scene, sitk.GetArrayFromImage(image), np.diag([6.0, 6.0, 6.0, 1.0]), "patient CBCT")
    with pytest.raises(Exception, match="phantom"):
        logic.translate(unmarked, "CBCT", "CT")
