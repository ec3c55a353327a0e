"""The comparison layout, set through MRML nodes only (layout, slice composite and table view nodes)."""

from __future__ import annotations

import numpy as np

from MedTransSlicerLib import TranslationOutputs, layout

from .helpers import addVolume, headArray


def _composite(scene, viewName):
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        if node.GetLayoutName() == viewName:
            return node
    raise AssertionError(f"no composite node for {viewName}")


def test_source_synthetic_and_reference_are_shown_side_by_side_with_the_difference_overlaid(scene, logic, source):
    volume = lambda name: addVolume(scene, headArray(), np.eye(4), name)  # noqa: E731
    reference, synthetic, difference = volume("planning CT"), volume("synthetic"), volume("difference")
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", "metrics")
    outputs = TranslationOutputs(synthetic, differenceNode=difference, metricsTableNode=table)

    logic.showResults(outputs, source, reference)

    layoutNode = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    arrangement = layoutNode.GetViewArrangement()
    description = layoutNode.GetLayoutDescription(arrangement)
    assert description.count('class="vtkMRMLSliceNode"') == 3 and "vtkMRMLTableViewNode" in description
    shown = [
        (_composite(scene, v).GetBackgroundVolumeID(), _composite(scene, v).GetForegroundVolumeID())
        for v in layout.VIEW_NAMES
    ]
    assert shown == [(source.GetID(), None), (synthetic.GetID(), difference.GetID()), (reference.GetID(), None)]
    assert _composite(scene, "Yellow").GetForegroundOpacity() == layout.DIFFERENCE_OPACITY
    assert all(_composite(scene, v).GetLinkedControl() for v in layout.VIEW_NAMES)
    assert scene.GetFirstNodeByClass("vtkMRMLTableViewNode").GetTableNodeID() == table.GetID()


def test_without_a_reference_two_views_show_source_and_synthetic(scene, logic, source):
    synthetic = addVolume(scene, headArray(), np.eye(4), "synthetic")
    logic.showResults(TranslationOutputs(synthetic), source)
    layoutNode = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    description = layoutNode.GetLayoutDescription(layoutNode.GetViewArrangement())
    assert description.count('class="vtkMRMLSliceNode"') == 2 and "vtkMRMLTableViewNode" not in description
    assert _composite(scene, "Yellow").GetBackgroundVolumeID() == synthetic.GetID()
    assert _composite(scene, "Yellow").GetForegroundVolumeID() is None


def test_showing_results_twice_reuses_the_view_nodes(scene, logic, source):
    synthetic = addVolume(scene, headArray(), np.eye(4), "synthetic")
    logic.showResults(TranslationOutputs(synthetic), source)
    count = scene.GetNumberOfNodes()
    logic.showResults(TranslationOutputs(synthetic), source)
    assert scene.GetNumberOfNodes() == count
