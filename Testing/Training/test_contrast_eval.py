"""Scoring contrast-phase models on abdomen phantoms: image metrics over the body, HU errors per enhancing structure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from medtrans_training.contrast_eval import IDENTITY, STRUCTURES, case_rows, markdown, summarise
from MedTransCore.phantoms import generate_phantom


@pytest.fixture(scope="module")
def case():
    return generate_phantom(
        "abdomen", seed=3, shape=(48, 36, 24), spacing=(8.0, 8.0, 8.0), modalities=["CT", "CT_ARTERIAL", "CT_VENOUS"]
    )


def test_the_identity_misses_exactly_the_true_enhancement_and_the_truth_scores_zero(case):
    labels = sitk.GetArrayFromImage(case.labels)
    body = sitk.GetArrayFromImage(case.body_mask) > 0
    predictions = {IDENTITY: case.images["CT"], "oracle": case.images["CT_ARTERIAL"]}
    identity, oracle = case_rows(case, predictions, "CT_ARTERIAL", labels, body)
    assert identity["method"] == IDENTITY and oracle["method"] == "oracle"
    # The arterial aorta is enhanced by hundreds of HU: the non-contrast CT misses all of it.
    assert identity["true enhancement aorta"] > 150
    for name in STRUCTURES:
        assert identity[f"ME {name}"] == pytest.approx(-identity[f"true enhancement {name}"])
        assert identity[f"MAE {name}"] >= abs(identity[f"ME {name}"]) - 1e-9
        assert oracle[f"MAE {name}"] == 0.0
    assert oracle["MAE"] == 0.0 and oracle["NMSE"] == 0.0 and math.isinf(oracle["PSNR"])
    assert identity["NMSE"] > 0 and identity["SSIM"] < 1


def test_the_summary_averages_cases_and_the_table_has_one_row_per_method_and_phase(case):
    labels = sitk.GetArrayFromImage(case.labels)
    body = sitk.GetArrayFromImage(case.body_mask) > 0
    rows = []
    for target in ("CT_ARTERIAL", "CT_VENOUS"):
        rows += case_rows(case, {IDENTITY: case.images["CT"]}, target, labels, body)
    shifted = [dict(r, case=4, **{"MAE aorta": r["MAE aorta"] + 10.0}) for r in rows]
    summary = summarise(rows + shifted)
    arterial = summary["CT_ARTERIAL"][IDENTITY]
    assert arterial["cases"] == 2 and arterial["MAE aorta"] == pytest.approx(rows[0]["MAE aorta"] + 5.0)
    table = markdown(summary, [3, 4])
    assert table.count(f"| {IDENTITY} |") == 2 and "-> arterial" in table and "-> portal-venous" in table
    assert "seeds 3-4" in table and np.isfinite(arterial["SSIM"])
