"""The dose check: a real pyRadPlan plan on a head phantom through the CLI and the library, and its guard rails."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.cli.main import main
from MedTransCore.dose import DoseCancelled, PlanSettings, plan_and_recompute
from MedTransCore.dose.engine import grid_mismatch, sphere_target
from MedTransCore.errors import InputError
from MedTransCore.io import read_image
from MedTransCore.phantoms import generate_phantom

#: A small head at 5 mm: the plan, dose influence and recompute take about half a minute here.
SHAPE, SPACING = (40, 40, 30), (5.0, 5.0, 5.0)
FAST = PlanSettings(beams=3, dose_grid_mm=5.0, target_radius_mm=15.0)


@pytest.fixture(scope="module")
def head():
    return generate_phantom("head", 11, SHAPE, SPACING, modalities=["CT", "CBCT"])


def test_the_cli_names_the_files_the_report_writes():
    from MedTransCore.cli.dose import FILE_KEYS, OUTPUT_FILES
    from MedTransCore.dose.report import FILES

    assert dict(zip(FILE_KEYS, OUTPUT_FILES)) == FILES


def test_plan_settings_refuse_values_no_plan_can_use():
    for bad in ({"beams": 0}, {"prescription_gy": 0.0}, {"dose_grid_mm": 0.2}, {"target_radius_mm": -1.0}):
        with pytest.raises(InputError):
            PlanSettings(**bad)


def test_the_test_target_is_a_sphere_in_the_body_at_its_centre_or_at_the_given_point(head):
    default = sitk.GetArrayFromImage(sphere_target(head.body_mask, 15.0, None)) > 0
    body = sitk.GetArrayFromImage(head.body_mask) > 0
    assert default.any() and not (default & ~body).any()
    assert np.allclose(np.argwhere(default).mean(0), np.argwhere(body).mean(0), atol=1.0)
    corner = head.body_mask.TransformIndexToPhysicalPoint((12, 14, 10))
    placed = sitk.GetArrayFromImage(sphere_target(head.body_mask, 10.0, corner)) > 0
    assert np.allclose(np.argwhere(placed).mean(0), (10, 14, 12), atol=1.0)
    with pytest.raises(InputError, match="holds no body voxel"):
        sphere_target(head.body_mask, 5.0, (1e4, 1e4, 1e4))


def test_an_sct_outside_the_ct_or_an_empty_target_is_refused_before_any_dose_is_computed(head):
    ct = head.images["CT"]
    far = sitk.Image(head.images["CBCT"])
    far.SetOrigin((5000.0, 5000.0, 5000.0))
    assert "origin" in grid_mismatch(far, ct)
    with pytest.raises(InputError, match="does not overlap"):
        plan_and_recompute(ct, far, settings=FAST)
    empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct)
    with pytest.raises(InputError, match="target mask is empty"):
        plan_and_recompute(ct, ct, target=empty, settings=FAST)


def test_an_sct_on_another_grid_is_resampled_onto_the_ct_and_the_mismatch_is_named(head):
    from MedTransCore.dose.engine import OUTSIDE_HU, sct_on_ct_grid

    ct = head.images["CT"]
    coarse = sitk.Resample(ct, [20, 20, 15], sitk.Transform(), sitk.sitkLinear, ct.GetOrigin(), (10.0, 10.0, 10.0))
    resampled, note = sct_on_ct_grid(coarse, ct)
    assert resampled.GetSize() == ct.GetSize() and resampled.GetSpacing() == ct.GetSpacing()
    assert "spacing (10, 10, 10) vs (5, 5, 5) mm" in note and "size" in note
    assert (sitk.GetArrayFromImage(resampled) > OUTSIDE_HU).any()
    assert sct_on_ct_grid(ct, ct)[1] is None  # the same grid: nothing to report


def test_a_cancelled_dose_check_stops_before_planning(head):
    with pytest.raises(DoseCancelled):
        plan_and_recompute(head.images["CT"], head.images["CBCT"], settings=FAST, cancel=lambda: True)


@pytest.mark.slow
def test_a_synthetic_ct_equal_to_the_ct_gives_the_same_dose_and_the_target_gets_the_prescription(head):
    ct = head.images["CT"]
    stages = []
    pair = plan_and_recompute(ct, ct, settings=FAST, progress=lambda fraction, stage: stages.append(stage))
    ct_dose, sct_dose = sitk.GetArrayFromImage(pair.ct_dose), sitk.GetArrayFromImage(pair.sct_dose)
    assert np.abs(sct_dose - ct_dose).max() < 1e-3 * ct_dose.max()
    target = sitk.GetArrayFromImage(pair.structures["TARGET"]) > 0
    assert abs(float(np.median(ct_dose[target])) - FAST.prescription_gy) < 0.05 * FAST.prescription_gy
    assert pair.test_plan and pair.grid_note is None and "recompute on the sCT" in stages


@pytest.mark.slow
def test_the_cli_plans_a_head_phantom_recomputes_it_on_the_cbct_and_writes_gamma_and_dvh(head, tmp_path, capsys):
    for key in ("CT", "CBCT"):
        sitk.WriteImage(head.images[key], str(tmp_path / f"{key}.nii.gz"))
    out = tmp_path / "dose"
    argv = ["dose", "--ct", str(tmp_path / "CT.nii.gz"), "--sct", str(tmp_path / "CBCT.nii.gz")]
    argv += ["--beams", "3", "--dose-grid", "5", "--target-radius", "15", "--out", str(out)]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    printed = capsys.readouterr().out
    assert "TEST PLAN" in printed and "gamma pass rate" in printed
    summary = json.loads((out / "dose.json").read_text())
    rates = summary["gamma_pass_rate"]
    assert list(rates) == ["1%/1mm", "2%/2mm", "3%/3mm"]
    assert 0 <= rates["1%/1mm"] <= rates["2%/2mm"] <= rates["3%/3mm"] <= 100
    assert set(summary["dvh"]) == {"TARGET", "BODY"}
    for metrics in summary["dvh"].values():
        assert set(metrics) == {"D98", "D95", "D50", "D2", "Dmean"}
        for value in metrics.values():
            assert value["difference"] == pytest.approx(value["sct"] - value["ct"], abs=1e-9)
    assert summary["plan"]["test_plan"] is True and summary["plan"]["beams"] == 3
    sct_dose, _ = read_image(out / "sct_dose.nii.gz")
    ct_dose, _ = read_image(out / "ct_dose.nii.gz")
    difference, _ = read_image(out / "dose_difference.nii.gz")
    assert sct_dose.GetSize() == head.images["CT"].GetSize()
    assert np.allclose(
        sitk.GetArrayFromImage(difference), sitk.GetArrayFromImage(sct_dose) - sitk.GetArrayFromImage(ct_dose)
    )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(out / "sct_dose.nii.gz"))
    reader.ReadImageInformation()
    assert "SYNTHETIC" in reader.GetMetaData("descrip")
    assert (out / "dose_report.png").stat().st_size > 10_000
    gamma = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "gamma_2pct_2mm.nii.gz")))
    assert np.isfinite(gamma).all() and (gamma == -1).any() and gamma.max() <= 2  # -1: below the threshold
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "structures.nii.gz")))
    assert summary["structure_labels"] == {"TARGET": 1, "BODY": 2} and set(np.unique(labels)) == {0, 1, 2}
    with pytest.raises(SystemExit) as refused:  # the outputs exist: refused without --overwrite, nothing recomputed
        main(argv)
    assert refused.value.code != 0 and "--overwrite" in capsys.readouterr().err


def test_the_dose_benchmark_table_gives_mean_and_worst_per_method_and_judges_the_slowest_check():
    from MedTransCore.benchmark_dose import format_dose_table

    def row(seed, method, rate, d95, seconds):
        rates = {"1%/1mm": rate - 10, "2%/2mm": rate, "3%/3mm": 100.0}
        return {
            "seed": seed, "grid": "64x64x64", "spacing_mm": 3.0, "method": method, "model": "m", "beams": 7,
            "prescription_gy": 60.0, "gamma_pass_rate": rates, "target_d95_difference_gy": d95,
            "target_dmean_difference_gy": d95 / 2, "plan_seconds": seconds, "recompute_and_gamma_seconds": 20.0,
        }  # fmt: skip

    rows = [row(1, "CBCT as is", 90.0, -1.0, 80.0), row(2, "CBCT as is", 80.0, -3.0, 110.0)]
    rows += [row(1, "model", 99.0, 0.2, 80.0), row(2, "model", 97.0, -0.4, 110.0)]
    table = format_dose_table(rows)
    assert (
        "| CBCT as is | m | 75.0 % (min 70.0) | 85.0 % (min 80.0) | 100.0 % (min 100.0) | -2.00 (worst -3.00)" in table
    )
    assert "| model | m | 88.0 % (min 87.0) | 98.0 % (min 97.0) |" in table
    assert "130 s, the slowest phantom (target 120 s): MISSED by 10 s" in table
