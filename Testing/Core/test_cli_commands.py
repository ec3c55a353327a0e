"""demo, batch, evaluate, phantom and models through the command line."""

import csv
import json

import pytest
import SimpleITK as sitk

from .helpers import ct_like_volume
from .test_cli import run_cli, write


@pytest.mark.slow
def test_the_demo_writes_its_files_and_prints_the_table(tmp_path, capsys):
    assert run_cli("demo", "--out", tmp_path) == 0
    out = capsys.readouterr().out
    assert "synthetic vs reference" in out and "source vs reference" in out and "MAE [HU]" in out
    for name in ("source_CBCT.nii.gz", "synthetic_CT.nii.gz", "reference_CT.nii.gz", "difference.nii.gz", "report.png"):
        assert (tmp_path / name).stat().st_size > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["metrics"]["MAE"] < metrics["source_vs_reference"]["MAE"], "the model must beat using the CBCT as is"
    # The shipped CBCT->CT model is trained: it is compared with, and beats, the histogram-matching baseline.
    assert metrics["settings"]["family"] == "unet" and "histogram matching vs reference" in out
    assert metrics["metrics"]["MAE"] < metrics["histogram_matching_vs_reference"]["MAE"]


def test_phantom_writes_every_modality_with_labels_and_mask(tmp_path, capsys):
    assert (
        run_cli("phantom", "--anatomy", "pelvis", "--seed", "2", "--out", tmp_path, "--size", "32", "--spacing", "4")
        == 0
    )
    for key in ("CT", "CBCT", "MR_T1", "MR_T2", "CT_ARTERIAL", "labels", "body_mask"):
        assert sitk.ReadImage(str(tmp_path / f"{key}.nii.gz")).GetSize() == (32, 32, 32)


def test_models_lists_the_shipped_bundles_as_json(capsys):
    assert run_cli("models", "--json") == 0
    names = {row["name"] for row in json.loads(capsys.readouterr().out)}
    assert {"identity", "histogram-matching"} <= names


def test_evaluate_scores_and_refuses_mismatched_grids_unless_registered(tmp_path, capsys):
    reference = ct_like_volume(oblique=False)
    prediction = sitk.GetArrayFromImage(reference) + 10.0
    pred = sitk.GetImageFromArray(prediction)
    pred.CopyInformation(reference)
    p, r = write(pred, tmp_path / "p.nrrd"), write(reference, tmp_path / "r.nrrd")
    assert (
        run_cli("evaluate", "--prediction", p, "--reference", r, "--modality", "CT", "--json", tmp_path / "m.json") == 0
    )
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert metrics["ME"] == pytest.approx(10.0) and metrics["MAE"] == pytest.approx(10.0)
    shifted = sitk.Image(reference)
    shifted.SetOrigin([o + 3.0 for o in reference.GetOrigin()])
    s = write(shifted, tmp_path / "s.nrrd")
    assert run_cli("evaluate", "--prediction", p, "--reference", s, "--modality", "CT") == 1
    assert "--register" in capsys.readouterr().err


def test_batch_keeps_going_past_a_bad_case_and_resumes(tmp_path, capsys):
    write(ct_like_volume(oblique=False), tmp_path / "good.nrrd")
    (tmp_path / "bad.nii.gz").write_bytes(b"not an image")
    manifest = tmp_path / "cohort.csv"
    rows = [
        {
            "case": "good",
            "input": "good.nrrd",
            "source_modality": "CBCT",
            "target_modality": "CT",
            "reference": "good.nrrd",
        },
        {"case": "bad", "input": "bad.nii.gz", "source_modality": "CBCT", "target_modality": "CT", "reference": ""},
    ]
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rows[0])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out"
    assert run_cli("batch", manifest, "--out", out, "--model", "identity") == 1
    summary = {r["case"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert summary["good"]["status"] == "done" and float(summary["good"]["MAE"]) < 1e-3
    assert summary["bad"]["status"] == "failed" and summary["bad"]["error"]
    written = (out / "good" / "synthetic_CT.nii.gz").stat().st_mtime_ns
    (tmp_path / "bad.nii.gz").unlink()
    write(ct_like_volume(oblique=False), tmp_path / "bad.nii.gz")  # the bad case is fixed; the good one is skipped
    assert run_cli("batch", manifest, "--out", out, "--model", "identity") == 0
    assert (out / "good" / "synthetic_CT.nii.gz").stat().st_mtime_ns == written
    assert {r["status"] for r in csv.DictReader(open(out / "summary.csv"))} == {"done"}


def test_evaluate_with_rigid_registration_aligns_a_shifted_reference_and_reports_the_transform(tmp_path, capsys):
    prediction = ct_like_volume(size=(40, 40, 32), spacing=(2.0, 2.0, 2.0), oblique=False)
    shift = sitk.TranslationTransform(3, (4.0, -2.0, 3.0))
    reference = sitk.Resample(prediction, prediction, shift, sitk.sitkLinear, -1000.0)
    reference.SetOrigin([o + 1.0 for o in reference.GetOrigin()])  # another grid: refused without --register
    p, r = write(prediction, tmp_path / "p.nrrd"), write(reference, tmp_path / "r.nrrd")
    args = ["evaluate", "--prediction", p, "--reference", r, "--modality", "CT", "--json", tmp_path / "m.json"]
    assert run_cli(*args) == 1
    assert run_cli(*args, "--register", "rigid") == 0
    assert "rigid alignment of the reference" in capsys.readouterr().out
    result = json.loads((tmp_path / "m.json").read_text())
    assert len(result["registration"]["translation_mm"]) == 3
    assert result["metrics"]["MAE"] < 40.0


def test_benchmark_prints_the_table_and_writes_json_rows_for_the_chosen_model(tmp_path, capsys):
    rows_file = tmp_path / "rows.json"
    assert run_cli("benchmark", "--quick", "--model", "identity", "--device", "cpu", "--json", rows_file) == 0
    out = capsys.readouterr().out
    assert "## Speed and memory" in out and "identity at 16x16x8 on cpu" in out
    rows = json.loads(rows_file.read_text())
    assert {r["model"] for r in rows} == {"identity"} and [r["kind"] for r in rows] == ["speed", "memory"]
