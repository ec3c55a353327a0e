"""The baselines next to the model in the metrics, as ``medtrans demo`` shows them: the source as is and its histogram
matched to the reference, scored against the same reference in the same mask; a model that loses to one is flagged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.metrics import compute_metrics, reference_body_mask
from MedTransSlicerLib import results

from .helpers import IDENTITY, addVolume, headArray, nodeArray, obliqueMatrix

BASELINES = ["source as is", "histogram matching"]


def _reference(scene, array):
    return addVolume(scene, array.astype(np.float32), obliqueMatrix(), "planning CT")


def test_a_translation_with_a_reference_puts_both_baselines_in_the_metrics_table(scene, logic, source):
    rng = np.random.default_rng(1)
    referenceArray = headArray() + np.linspace(-30, 30, 22, dtype=np.float32) + rng.normal(0, 5, headArray().shape)
    reference = _reference(scene, referenceArray)

    outputs = logic.translate(source, "CBCT", "CT", model=IDENTITY, referenceNode=reference)

    table = outputs.metricsTableNode.GetTable()
    titles = [table.GetColumnName(i) for i in range(table.GetNumberOfColumns())]
    assert titles == ["Metric", "Value", "Unit", "Source as is", "Histogram matching"]
    assert list(outputs.baselineMetrics) == BASELINES
    readBack = results.baselinesFromTable(outputs.metricsTableNode)
    assert list(readBack) == BASELINES
    rows = list(results.metricsFromTable(outputs.metricsTableNode))
    for name in BASELINES:
        assert list(readBack[name]) == rows
        for metric in rows:
            assert readBack[name][metric] == pytest.approx(outputs.baselineMetrics[name][metric], nan_ok=True)

    # The source as is, scored independently in the reference's body mask.
    referenceVoxels = nodeArray(reference)
    mask = reference_body_mask(sitk.GetImageFromArray(referenceVoxels), "CT")
    expected = compute_metrics(headArray(), referenceVoxels, "CT", mask=mask)
    for metric in ("MAE", "ME", "PSNR", "SSIM", "MAE_bone"):
        assert readBack["source as is"][metric] == pytest.approx(expected[metric], rel=1e-6), metric
    # The identity model is the source as is; histogram matching, made for this reference, is a different column.
    assert outputs.metrics["MAE"] == pytest.approx(readBack["source as is"]["MAE"], rel=1e-3)
    assert readBack["histogram matching"]["MAE"] != pytest.approx(readBack["source as is"]["MAE"], rel=1e-3)


def test_a_model_that_loses_to_histogram_matching_is_flagged_in_the_outputs_and_on_the_nodes(scene, logic, source):
    # The reference is the same anatomy with its intensities remapped: a quantile mapping recovers it, the identity not.
    referenceArray = np.where(headArray() > -500, 1.6 * headArray() + 120.0, headArray())
    reference = _reference(scene, referenceArray)

    outputs = logic.translate(source, "CBCT", "CT", model=IDENTITY, referenceNode=reference)

    losing = [w for w in outputs.warnings if w.startswith("on this case the model does worse than")]
    assert len(losing) == 1, outputs.warnings
    assert losing[0].startswith("on this case the model does worse than histogram matching (MAE ")
    assert " HU" in losing[0]
    assert losing[0] in json.loads(outputs.syntheticNode.GetAttribute("MedTrans.Warnings"))
    assert losing[0] in outputs.statusText()
    hm = outputs.baselineMetrics["histogram matching"]
    assert hm["MAE"] < outputs.metrics["MAE"]


def test_without_a_reference_there_are_no_baselines(scene, logic, source):
    outputs = logic.translate(source, "CBCT", "CT", model=IDENTITY)
    assert outputs.baselineMetrics is None and outputs.metricsTableNode is None


def test_a_table_without_baseline_columns_reads_as_no_baselines(scene):
    table = results.addMetricsTable(scene, {"MAE": 12.5, "SSIM": 0.9}, "CT", "old metrics")
    assert results.baselinesFromTable(table) == {}
    assert results.metricsFromTable(table) == {"MAE": 12.5, "SSIM": 0.9}


def test_baseline_columns_follow_the_metric_rows_and_are_nan_where_a_baseline_lacks_a_metric(scene):
    baselines = {"source as is": {"MAE": 40.0, "SSIM": 0.7}, "histogram matching": {"MAE": 20.0}}
    table = results.addMetricsTable(scene, {"MAE": 12.5, "SSIM": 0.9, "voxels": 3}, "CT", "metrics", baselines)
    assert results.metricsFromTable(table) == {"MAE": 12.5, "SSIM": 0.9}
    readBack = results.baselinesFromTable(table)
    assert readBack["source as is"] == {"MAE": 40.0, "SSIM": 0.7}
    assert readBack["histogram matching"]["MAE"] == 20.0 and math.isnan(readBack["histogram matching"]["SSIM"])


# -- the rule: worse on MAE AND on SSIM or PSNR -------------------------------------------------------------------


MODEL = {"MAE": 12.3, "SSIM": 0.80, "PSNR": 25.0}


@pytest.mark.parametrize(
    ("baseline", "flagged"),
    [
        ({"MAE": 10.1, "SSIM": 0.85, "PSNR": 24.0}, "MAE 12.3 vs 10.1 HU, SSIM 0.800 vs 0.850"),
        ({"MAE": 10.1, "SSIM": 0.70, "PSNR": 26.0}, "MAE 12.3 vs 10.1 HU, PSNR 25.0 vs 26.0 dB"),
        ({"MAE": 10.1, "SSIM": 0.70, "PSNR": 24.0}, None),  # higher MAE alone is no loss
        ({"MAE": 15.0, "SSIM": 0.90, "PSNR": 30.0}, None),  # lower SSIM and PSNR alone are no loss
        ({"MAE": 12.3 / 1.005, "SSIM": 0.8005, "PSNR": 25.01}, None),  # within rounding: not worse
        ({"MAE": math.nan, "SSIM": 0.9, "PSNR": 30.0}, None),  # undefined: nothing to say
        ({"MAE": 10.1, "SSIM": 0.85, "PSNR": math.inf}, "SSIM 0.800 vs 0.850, PSNR 25.0 vs inf dB"),
    ],
    ids=["mae-and-ssim", "mae-and-psnr", "mae-only", "ssim-and-psnr-only", "within-margins", "nan", "inf-psnr"],
)
def test_a_model_is_flagged_only_when_it_loses_on_mae_and_on_ssim_or_psnr(baseline, flagged):
    warnings = results.baselineWarnings(MODEL, {"histogram matching": baseline}, "CT")
    if flagged is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert warnings[0].startswith("on this case the model does worse than histogram matching (")
        assert flagged in warnings[0]


def test_the_rule_names_each_baseline_it_loses_to_with_the_targets_units():
    baselines = {"source as is": {"MAE": 0.05, "SSIM": 0.9}, "histogram matching": {"MAE": 0.2, "SSIM": 0.5}}
    warnings = results.baselineWarnings({"MAE": 0.1, "SSIM": 0.8}, baselines, "MR_T2")
    assert warnings == [
        "on this case the model does worse than source as is (MAE 0.1 vs 0.05 norm., SSIM 0.800 vs 0.900)"
    ]
