"""End-to-end translations of real MRML nodes through the core's CLI in a background process (identity model)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from MedTransCore.metrics import compute_metrics, reference_body_mask
from MedTransCore.modalities import display_window
from MedTransSlicerLib import results
from MedTransSlicerLib.run import STAGE_EXPORT, STAGE_START

from .helpers import IDENTITY, addVolume, headArray, nodeArray, nodeMatrix, obliqueMatrix, rotation, saveCbctOnlyBundle


def _fromTheCli(message: str) -> bool:
    return message not in (STAGE_EXPORT, STAGE_START)


def _reference(scene, matrix=None):
    """A 'planning CT' of the same patient: the phantom with a smooth HU offset and a little noise."""
    rng = np.random.default_rng(0)
    array = headArray() + np.linspace(-30, 30, 22, dtype=np.float32) + rng.normal(0, 5, headArray().shape)
    return addVolume(scene, array.astype(np.float32), obliqueMatrix() if matrix is None else matrix, "planning CT")


def test_a_translation_keeps_the_source_geometry_and_labels_every_result(scene, logic, source):
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "couch shift")
    shift = vtkMatrix4x4()
    shift.SetElement(1, 3, 4.0)
    transform.SetMatrixTransformToParent(shift)
    source.SetAndObserveTransformNodeID(transform.GetID())
    reference = _reference(scene)
    reference.SetAndObserveTransformNodeID(transform.GetID())
    progress = []

    outputs = logic.translate(
        source, "CBCT", "CT", model=IDENTITY, referenceNode=reference, progress=lambda f, m: progress.append(f)
    )

    nodes = [outputs.syntheticNode, outputs.differenceNode]
    for node in nodes:
        np.testing.assert_array_equal(nodeMatrix(node), obliqueMatrix())
        assert node.GetImageData().GetDimensions() == (22, 24, 20)
        assert node.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(nodeArray(source), headArray())  # the source is never modified
    synthetic, reference_array = nodeArray(outputs.syntheticNode), nodeArray(reference)
    np.testing.assert_allclose(synthetic, headArray(), atol=1e-2)  # identity model
    np.testing.assert_allclose(nodeArray(outputs.differenceNode), synthetic - reference_array, atol=1e-4)

    assert outputs.syntheticNode.GetName() == "patient CBCT -> CT (synthetic)"
    assert outputs.syntheticNode.GetAttribute("MedTrans.Synthetic") == "true"
    assert outputs.syntheticNode.GetAttribute("MedTrans.Model") == IDENTITY
    assert outputs.syntheticNode.GetAttribute("MedTrans.ModelVersion") == outputs.settings["version"]
    assert outputs.syntheticNode.GetAttribute("MedTrans.TargetModality") == "CT"
    assert outputs.differenceNode.GetAttribute("MedTrans.Synthetic") == "false"
    display = outputs.syntheticNode.GetDisplayNode()
    assert (display.GetLevel(), display.GetWindow()) == display_window("CT")
    differenceDisplay = outputs.differenceNode.GetDisplayNode()
    assert differenceDisplay.GetColorNodeID() == results.findDivergingColorNode(scene).GetID()
    assert differenceDisplay.GetLevel() == 0.0 and differenceDisplay.GetWindow() > 0

    referenceImage = sitk.GetImageFromArray(reference_array)
    expected = compute_metrics(synthetic, reference_array, "CT", mask=reference_body_mask(referenceImage, "CT"))
    table = results.metricsFromTable(outputs.metricsTableNode)
    for name in ("MAE", "ME", "PSNR", "SSIM", "NMSE", "NCC", "MAE_air", "MAE_soft_tissue", "MAE_bone"):
        assert table[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-9, nan_ok=True), name
    assert outputs.metricsTableNode.GetName() == "patient CBCT -> CT (metrics)"
    assert outputs.uncertaintyNode is None and outputs.transformNode is None
    assert progress[-1] == 1.0 and progress == sorted(progress)


def test_a_reference_from_another_day_is_aligned_rigidly_before_the_comparison(scene, logic, source):
    moved = obliqueMatrix()
    moved[:3, :3] = rotation(2, 4.0) @ moved[:3, :3]
    moved[:3, 3] += [3.0, -2.0, 2.5]  # the patient lay 3 mm / 2 mm / 2.5 mm and 4 degrees elsewhere
    reference = addVolume(scene, headArray(), moved, "planning CT (other day)")

    outputs = logic.translate(source, "CBCT", "CT", model=IDENTITY, referenceNode=reference, alignReference=True)

    assert outputs.transformNode.IsA("vtkMRMLLinearTransformNode")
    assert outputs.transformNode.GetName() == "planning CT (other day) -> patient CBCT -> CT (rigid)"
    # Under the transform the reference lands on the synthetic: a reference voxel maps onto the same source voxel.
    toParent = outputs.transformNode.GetMatrixTransformToParent()
    toParent = np.array([[toParent.GetElement(r, c) for c in range(4)] for r in range(4)])
    for ijk in [(11, 12, 10, 1.0), (5, 8, 14, 1.0), (16, 18, 4, 1.0)]:
        np.testing.assert_allclose(toParent @ moved @ ijk, obliqueMatrix() @ ijk, atol=1.0)
    # Aligned, the same phantom differs only by interpolation (misaligned, bone edges alone give hundreds of HU).
    assert outputs.metrics["MAE"] < 40.0


def test_cancelling_mid_run_kills_the_process_and_leaves_the_scene_as_it_was(scene, logic, source, monkeypatch):
    monkeypatch.setenv("MEDTRANS_TEST_SLOW_SECONDS", "2")
    reference = _reference(scene)
    before = scene.GetNumberOfNodes()
    messages, cancelled = [], []
    run = logic.translateAsync(
        source, "CBCT", "CT", model=IDENTITY, referenceNode=reference, progress=lambda f, m: messages.append(m)
    )
    run.cancelled.connect(lambda: cancelled.append(True))
    while not any(_fromTheCli(m) for m in messages):  # the core is working in the background process
        assert not run.poll(), run.error
    run.cancel()

    assert run.state == "cancelled" and cancelled == [True] and run.runner.returnCode() is not None
    assert run.poll() and run.outputs is None
    assert scene.GetNumberOfNodes() == before
    assert not run._folder.exists()
    np.testing.assert_array_equal(nodeArray(source), headArray())


def test_a_cancel_callable_stops_a_blocking_translation(scene, logic, source, monkeypatch):
    from MedTransCore.errors import CancelledError

    monkeypatch.setenv("MEDTRANS_TEST_SLOW_SECONDS", "2")
    before = scene.GetNumberOfNodes()
    seen = []
    with pytest.raises(CancelledError):
        logic.translate(
            source,
            "CBCT",
            "CT",
            model=IDENTITY,
            progress=lambda f, m: seen.append(m),
            cancel=lambda: any(map(_fromTheCli, seen)),
        )
    assert scene.GetNumberOfNodes() == before


def _emptyVolume(scene):
    return scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")


@pytest.mark.parametrize(
    ("make", "arguments", "message"),
    [
        (_emptyVolume, ("CBCT", "CT"), "empty"),
        (lambda scene: addVolume(scene, headArray((1, 24, 22)), np.eye(4), "slice"), ("CBCT", "CT"), "2D"),
        (
            lambda scene: addVolume(scene, headArray(), np.eye(4), "labels", "vtkMRMLLabelMapVolumeNode"),
            ("CBCT", "CT"),
            "label map",
        ),
        (None, ("MR_T1", "CT_ARTERIAL"), "does not support MR_T1->CT_ARTERIAL"),
        (None, ("CT", "PET"), "unknown modality"),
    ],
)
def test_bad_inputs_raise_emit_the_error_signal_and_add_nothing(
    scene, logic, source, tmp_path, make, arguments, message
):
    model = saveCbctOnlyBundle(tmp_path).path
    node = source if make is None else make(scene)
    before, errors = scene.GetNumberOfNodes(), []
    logic.errorOccurred.connect(errors.append)
    with pytest.raises(Exception, match=message) as raised:
        logic.translate(node, *arguments, model=model)
    assert type(raised.value).__name__ in ("InputError", "BundleError")
    assert len(errors) == 1 and message in errors[0]
    assert scene.GetNumberOfNodes() == before
    np.testing.assert_array_equal(nodeArray(source), headArray())


@pytest.mark.parametrize(
    ("options", "message"),
    [({"device": "tpu"}, "unknown device"), ({"steps": 0}, "steps"), ({"alignReference": True}, "reference volume")],
)
def test_bad_options_are_refused_before_anything_starts(scene, logic, source, options, message):
    from MedTransCore.errors import InputError

    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match=message):
        logic.translateAsync(source, "CBCT", "CT", model=IDENTITY, **options)
    assert scene.GetNumberOfNodes() == before


def test_an_error_of_the_background_process_is_reported_and_adds_nothing(scene, logic, source):
    before, errors = scene.GetNumberOfNodes(), []
    logic.errorOccurred.connect(errors.append)
    run = logic.translateAsync(source, "CBCT", "CT", model=IDENTITY, uncertainty=True)  # identity is deterministic
    failed = []
    run.failed.connect(failed.append)
    with pytest.raises(Exception, match="deterministic"):
        run.wait()
    assert run.state == "failed" and failed == errors and "deterministic" in errors[0]
    assert scene.GetNumberOfNodes() == before
