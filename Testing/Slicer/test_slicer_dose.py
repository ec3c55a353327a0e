"""The dose check through the MRML logic: ``medtrans dose`` in a background process, results as SlicerRT-style nodes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.errors import CancelledError, InputError
from MedTransCore.phantoms import generate_phantom
from MedTransSlicerLib.volumes import ijkToRasFromImage

from .helpers import addVolume, nodeArray, nodeIDs, nodeMatrix

OPTIONS = {"beams": 3, "doseGrid": 5.0, "targetRadius": 15.0}


def _phantomNodes(scene):
    """A head phantom at 5 mm: its CT and, as the 'synthetic CT', its CBCT (the dose differs a little)."""
    case = generate_phantom("head", 11, (40, 40, 30), (5.0, 5.0, 5.0), modalities=["CT", "CBCT"])
    matrix = ijkToRasFromImage(case.images["CT"])
    ct = addVolume(scene, sitk.GetArrayFromImage(case.images["CT"]), matrix, "planning CT")
    sct = addVolume(scene, sitk.GetArrayFromImage(case.images["CBCT"]), matrix, "synthetic CT")
    return ct, sct


def test_a_dose_check_with_the_ct_as_its_own_synthetic_ct_or_a_bad_plan_is_refused_before_it_starts(scene, logic):
    ct, sct = _phantomNodes(scene)
    before = nodeIDs(scene)
    with pytest.raises(InputError, match="synthetic CT is the CT"):
        logic.doseCheckAsync(ct, ct)
    with pytest.raises(InputError, match="beams"):
        logic.doseCheckAsync(ct, sct, beams=0)
    assert nodeIDs(scene) == before


def test_a_dose_check_cancelled_while_its_process_runs_kills_it_and_adds_nothing(scene, logic):
    from MedTransSlicerLib.dose import DoseRun

    ct, sct = _phantomNodes(scene)
    before = nodeIDs(scene)
    messages = []
    run = logic.doseCheckAsync(ct, sct, **OPTIONS, progress=lambda fraction, message: messages.append(message))
    while not set(messages) - {DoseRun.stageExport, DoseRun.stageStart}:  # the dose process is working
        assert not run.poll(), run.error
    run.cancel()
    with pytest.raises(CancelledError, match="dose check was cancelled"):
        run.wait()
    assert run.runner.returnCode() is not None and nodeIDs(scene) == before and not run._folder.exists()


@pytest.mark.slow
def test_a_head_phantom_dose_check_runs_end_to_end_through_the_mrml_logic(scene, logic):
    ct, sct = _phantomNodes(scene)
    progress = []
    outputs = logic.doseCheck(ct, sct, **OPTIONS, progress=lambda fraction, message: progress.append(message))
    assert "fluence optimisation" in progress and "recompute on the sCT" in progress
    for node in (outputs.ctDoseNode, outputs.sctDoseNode, outputs.differenceNode, outputs.structuresNode):
        assert np.allclose(nodeMatrix(node), nodeMatrix(ct)) and nodeArray(node).shape == nodeArray(ct).shape
    assert outputs.ctDoseNode.GetAttribute("DicomRtImport.DoseVolume") == "1"
    assert outputs.sctDoseNode.GetAttribute("DoseUnitName") == "Gy"
    assert outputs.sctDoseNode.GetAttribute("MedTrans.Synthetic") == "true"
    assert outputs.ctDoseNode.GetAttribute("MedTrans.Synthetic") == "false"
    assert "SYNTHETIC" in outputs.sctDoseNode.GetName()
    ctDose, sctDose = nodeArray(outputs.ctDoseNode), nodeArray(outputs.sctDoseNode)
    assert np.allclose(nodeArray(outputs.differenceNode), sctDose - ctDose, atol=1e-4)
    target = nodeArray(outputs.structuresNode) == 1
    assert abs(float(np.median(ctDose[target])) - 60.0) < 3.0
    rates = outputs.passRateTableNode
    assert [rates.GetCellText(r, 0) for r in range(rates.GetNumberOfRows())] == ["1%/1mm", "2%/2mm", "3%/3mm"]
    values = [float(rates.GetCellText(r, 1)) for r in range(3)]
    assert values == sorted(values) and 0 <= values[0] and values[-1] <= 100
    assert values == pytest.approx(list(outputs.summary["gamma_pass_rate"].values()))
    assert outputs.dvhMetricsTableNode.GetNumberOfRows() == 10  # 5 metrics of TARGET and BODY
    dvh = outputs.dvhTableNode
    assert dvh.GetColumnName(0) == "Dose (Gy)" and dvh.GetNumberOfColumns() == 5
    assert outputs.dvhChartNode.GetNumberOfPlotSeriesNodes() == 4
    target_ct = [float(dvh.GetCellText(r, 1)) for r in range(dvh.GetNumberOfRows())]
    assert target_ct[0] == pytest.approx(100.0) and target_ct == sorted(target_ct, reverse=True)
    gamma = nodeArray(outputs.gammaNode)
    assert gamma.max() <= 2 and set(np.unique(gamma[gamma < 0])) == {-1.0}  # -1: below the low-dose threshold
    assert (gamma >= 0).any()
    assert "TEST PLAN" in outputs.statusText()
