"""Several sequences in through the command line: ``medtrans translate --input MODALITY=PATH`` and batch manifests
with a column per further source, on real files, with a multi-source test fixture as the model."""

from __future__ import annotations

import csv
import json

import pytest
import SimpleITK as sitk

from . import test_multi_source_translate as multi
from .helpers import assert_same_geometry, oblique_direction
from .test_cli import run_cli, write
from .test_cli_output_safety import one_error_line, tree
from .test_multi_source_translate import brain, tiny_bundle

# The multi-source test family (a fixture of test_multi_source_translate).
mean_family = multi.mean_family

SETS = ((["MR_T1", "MR_FLAIR"], "MR_T2"), (["MR_T1", "MR_T1C", "MR_FLAIR"], "MR_T2"))


@pytest.fixture
def cohort(tmp_path, mean_family):
    """T1 (the reference grid, oblique), T1c and FLAIR on other grids, and a bundle that takes them."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    write(brain(direction=oblique_direction()), folder / "t1.nrrd")
    write(brain(size=(14, 13, 10), spacing=(1.6, 1.7, 2.6), origin=(-11.0, -10.5, -12.0), seed=1), folder / "t1c.nrrd")
    write(brain(size=(16, 15, 9), spacing=(1.3, 1.4, 2.7), scale=3.0, seed=2), folder / "flair.nii.gz")
    write(brain(origin=(400.0, 0.0, 0.0)), folder / "elsewhere.nrrd")
    tiny_bundle(tmp_path / "mean", sets=SETS)
    return folder


def translate_inputs(cohort, *inputs, target="MR_T2", output="t2.nrrd", model=None):
    args = ["translate", *(a for i in inputs for a in ("--input", i)), "--target-modality", target]
    return [*args, "--output", cohort / output, "--model", model or cohort.parent / "mean"]


def test_several_inputs_give_one_labelled_result_on_the_first_inputs_geometry(cohort, capsys):
    args = translate_inputs(cohort, f"MR_T1={cohort / 't1.nrrd'}", f"MR_FLAIR={cohort / 'flair.nii.gz'}")
    assert run_cli(*args) == 0
    result = sitk.ReadImage(str(cohort / "t2.nrrd"))
    assert_same_geometry(result, sitk.ReadImage(str(cohort / "t1.nrrd")), tol=1e-6)
    assert result.GetMetaData("MedTrans_Synthetic") == "true"
    assert result.GetMetaData("MedTrans_source_modalities") == "MR_T1,MR_FLAIR"
    assert result.GetMetaData("MedTrans_source_modality") == "MR_T1"
    out = capsys.readouterr().out
    assert "SYNTHETIC MR_T2 (from MR_T1 + MR_FLAIR)" in out
    assert "limitations: a test fixture, not a model" in out


def test_three_inputs_reach_the_model_as_three_channels_in_the_order_given(cohort, mean_family, capsys):
    inputs = [f"MR_T1={cohort / 't1.nrrd'}", f"MR_T1C={cohort / 't1c.nrrd'}", f"MR_FLAIR={cohort / 'flair.nii.gz'}"]
    assert run_cli(*translate_inputs(cohort, *inputs), "--progress-format", "lines") == 0
    assert mean_family.seen[0].shape[:2] == (1, 3)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("RESULT "))
    assert result["source_modalities"] == ["MR_T1", "MR_T1C", "MR_FLAIR"]
    assert result["limitations"] == "a test fixture, not a model"


def test_the_single_input_form_is_unchanged(cohort, capsys):
    args = ["translate", cohort / "t1.nrrd", "--source-modality", "MR_T1", "--target-modality", "MR_T2"]
    assert run_cli(*args, "--output", cohort / "t2.nrrd", "--model", "identity") == 0
    assert_same_geometry(sitk.ReadImage(str(cohort / "t2.nrrd")), sitk.ReadImage(str(cohort / "t1.nrrd")))
    assert "SYNTHETIC MR_T2 to" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("inputs", "extra", "words"),
    [
        (["MR_T1"], [], ["not MODALITY=PATH"]),
        (["=t1.nrrd"], [], ["not MODALITY=PATH"]),
        (["MR_T1="], [], ["not MODALITY=PATH"]),
        (["MR_X=t1.nrrd"], [], ["unknown modality 'MR_X'"]),
        (["MR_T1=t1.nrrd", "MR_T1=t1c.nrrd"], [], ["MR_T1 is given twice"]),
        (["MR_T1=t1.nrrd", "MR_T2=t1c.nrrd"], [], ["target MR_T2 is among the sources"]),
        (["MR_T1=t1.nrrd", "MR_FLAIR=missing.nii.gz"], [], ["missing.nii.gz", "no such file"]),
        (["MR_T1=t1.nrrd", "MR_FLAIR=elsewhere.nrrd"], [], ["MR_FLAIR source does not overlap"]),
        (["MR_T1=t1.nrrd", "MR_PD=t1c.nrrd"], [], ["does not support MR_T1 + MR_PD->MR_T2"]),
        (
            ["MR_T1=t1.nrrd", "MR_FLAIR=flair.nii.gz"],
            ["--model", "identity"],
            ["does not support MR_T1 + MR_FLAIR->MR_T2"],
        ),
        (["MR_T1=t1.nrrd"], ["--source-modality", "MR_T1"], ["not both"]),
    ],
)
def test_every_bad_multi_input_request_is_one_error_line_and_writes_nothing(
    cohort, capsys, monkeypatch, inputs, extra, words
):
    monkeypatch.chdir(cohort)
    before = tree(cohort)
    model = extra[1] if extra[:1] == ["--model"] else None
    args = translate_inputs(cohort, *inputs, model=model)
    if extra[:1] == ["--source-modality"]:
        args += extra
    assert run_cli(*args) == 1
    one_error_line(capsys, *words)
    assert tree(cohort) == before


def test_a_positional_input_together_with_input_options_is_refused(cohort, capsys):
    args = translate_inputs(cohort, f"MR_FLAIR={cohort / 'flair.nii.gz'}")
    assert run_cli(args[0], cohort / "t1.nrrd", *args[1:]) == 1
    one_error_line(capsys, "not both")


def test_no_output_may_replace_any_of_the_inputs(cohort, capsys):
    before = (cohort / "flair.nii.gz").read_bytes()
    inputs = [f"MR_T1={cohort / 't1.nrrd'}", f"MR_FLAIR={cohort / 'flair.nii.gz'}"]
    assert run_cli(*translate_inputs(cohort, *inputs, output="flair.nii.gz"), "--overwrite") == 1
    one_error_line(capsys, "is the input")
    assert (cohort / "flair.nii.gz").read_bytes() == before


def manifest(path, rows):
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_a_batch_manifest_takes_further_sources_as_columns_named_after_their_modality(cohort, mean_family, capsys):
    rows = [
        {"case": "three", "input": "t1.nrrd", "source_modality": "MR_T1", "MR_T1C": "t1c.nrrd"},
        {"case": "two", "input": "t1.nrrd", "source_modality": "MR_T1", "MR_T1C": ""},
    ]
    for row in rows:
        row.update({"MR_FLAIR": "flair.nii.gz", "target_modality": "MR_T2"})
    path = manifest(cohort / "cases.csv", rows)
    out = cohort.parent / "out"
    assert run_cli("batch", path, "--out", out, "--model", cohort.parent / "mean") == 0
    assert [tuple(w.shape[:2]) for w in mean_family.seen] == [(1, 3), (1, 2)]
    for case in ("three", "two"):
        result = sitk.ReadImage(str(out / case / "synthetic_MR_T2.nii.gz"))
        assert_same_geometry(result, sitk.ReadImage(str(cohort / "t1.nrrd")), tol=1e-4)
    with open(out / "summary.csv", encoding="utf-8") as f:
        summary = list(csv.DictReader(f))
    assert [row["status"] for row in summary] == ["done", "done"]


def test_a_batch_source_column_that_is_the_target_is_refused_naming_the_line(cohort, capsys):
    row = {"case": "a", "input": "t1.nrrd", "source_modality": "MR_T1", "target_modality": "MR_T2"}
    path = manifest(cohort / "cases.csv", [{**row, "MR_T2": "t1c.nrrd"}])
    assert run_cli("batch", path, "--out", cohort.parent / "out", "--model", cohort.parent / "mean") == 1
    one_error_line(capsys, "line 2", "column MR_T2 is also the target_modality")
    assert not (cohort.parent / "out").exists()


def test_a_batch_case_whose_further_source_is_missing_fails_alone(cohort, capsys):
    rows = [
        {"case": "bad", "input": "t1.nrrd", "source_modality": "MR_T1", "MR_FLAIR": "missing.nii.gz"},
        {"case": "good", "input": "t1.nrrd", "source_modality": "MR_T1", "MR_FLAIR": "flair.nii.gz"},
    ]
    path = manifest(cohort / "cases.csv", [{**row, "target_modality": "MR_T2"} for row in rows])
    out = cohort.parent / "out"
    assert run_cli("batch", path, "--out", out, "--model", cohort.parent / "mean") == 1
    status = json.loads((out / "status.json").read_text())
    assert status["bad"]["status"] == "failed" and "missing.nii.gz" in status["bad"]["error"]
    assert status["good"]["status"] == "done" and not (out / "bad").exists()
