"""Result-node helpers: diverging colours, metrics table, LPS -> RAS conversion of registration transforms."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from MedTransSlicerLib import results


def test_the_difference_colours_run_blue_white_red_transparent_at_zero_and_are_made_once_per_scene(scene):
    colors = results.divergingColorNode(scene)
    assert results.divergingColorNode(scene) is colors
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == 1
    rgba = [0.0] * 4
    n = colors.GetNumberOfColors()
    colors.GetColor(0, rgba)
    assert rgba[:3] == [0.0, 0.0, 1.0]
    colors.GetColor(n - 1, rgba)
    assert rgba[:3] == [1.0, 0.0, 0.0]
    assert rgba[3] == 1.0
    colors.GetColor(n // 2, rgba)
    assert min(rgba[:3]) > 0.99 and rgba[3] < 0.05, "no difference must be see-through in the overlay"
    for index in range(n // 2):  # symmetric: index i and n-1-i are mirror images
        low, high = [0.0] * 4, [0.0] * 4
        colors.GetColor(index, low)
        colors.GetColor(n - 1 - index, high)
        assert math.isclose(low[2], high[0]) and math.isclose(low[0], high[2])


def test_a_metrics_table_holds_one_row_per_metric_with_units(scene):
    metrics = {"MAE": 12.5, "ME": -3.0, "PSNR": math.inf, "SSIM": 0.91, "NCC": math.nan, "MAE_bone": 80.0, "voxels": 9}
    table = results.addMetricsTable(scene, metrics, "CT", "metrics")
    values = results.metricsFromTable(table)
    assert list(values) == ["MAE", "ME", "PSNR", "SSIM", "NCC", "MAE_bone"]
    assert values["MAE"] == 12.5 and values["PSNR"] == math.inf and math.isnan(values["NCC"])
    units = table.GetTable().GetColumnByName("Unit")
    assert [units.GetValue(i) for i in range(3)] == ["HU", "HU", "dB"]


def test_a_registration_transform_converts_from_lps_to_ras():
    transform = sitk.Euler3DTransform((4.0, -2.0, 7.0), 0.1, -0.2, 0.3, (1.5, 2.5, -3.0))
    ras = results.rasMatrixFromTransform(transform)
    for point in [(0.0, 0.0, 0.0), (10.0, -20.0, 30.0), (-7.5, 3.0, 1.0)]:
        lps = np.array([-point[0], -point[1], point[2]])
        mapped = np.array(transform.TransformPoint(tuple(lps)))
        expected = [-mapped[0], -mapped[1], mapped[2]]
        np.testing.assert_allclose((ras @ [*point, 1.0])[:3], expected, atol=1e-9)


def test_a_transform_node_moves_the_reference_onto_the_synthetic(scene):
    transform = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, 0.2, (0.0, 0.0, 0.0))
    node = results.addRigidTransform(scene, transform, "alignment")
    fromParent = results.rasMatrixFromTransform(transform)
    toParent = np.array([[node.GetMatrixTransformToParent().GetElement(r, c) for c in range(4)] for r in range(4)])
    np.testing.assert_allclose(toParent @ fromParent, np.eye(4), atol=1e-12)


def test_results_are_named_after_their_source_and_marked(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", results.resultName("CBCT day 1", "CT", "synthetic"))
    settings = {"model": "unet-cbct", "version": "1.2", "seed": 0, "target_modality": "CT", "source_modality": "CBCT"}
    results.markResult(node, "synthetic", settings, ["odd range"], synthetic=True)
    assert node.GetName() == "CBCT day 1 -> CT (synthetic)"
    assert node.GetAttribute("MedTrans.Synthetic") == "true"
    assert node.GetAttribute("MedTrans.Model") == "unet-cbct"
    assert node.GetAttribute("MedTrans.ModelVersion") == "1.2"
    assert "SYNTHETIC CT" in node.GetDescription()
