"""The command line, end to end on real files: good runs and every bad input of the issue."""

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from MedTransCore.cli.main import main

from .helpers import assert_same_geometry, ct_like_volume
from .test_translate import tiny_identity_bundle


def run_cli(*argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    return exit_info.value.code


def write(image: sitk.Image, path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.fixture
def ct_file(tmp_path):
    return write(ct_like_volume(), tmp_path / "source.nrrd")


def translate_args(source, output, *extra):
    return ["translate", source, "--source-modality", "CBCT", "--target-modality", "CT", "--output", output, *extra]


def test_translate_writes_a_labelled_synthetic_volume_on_the_source_geometry(tmp_path, ct_file, capsys):
    out = tmp_path / "synthetic.nrrd"
    assert run_cli(*translate_args(ct_file, out, "--model", "identity")) == 0
    result = sitk.ReadImage(str(out))
    assert_same_geometry(result, sitk.ReadImage(ct_file))
    assert result.GetMetaData("MedTrans_Synthetic") == "true"
    assert "SYNTHETIC" in capsys.readouterr().out


def test_progress_lines_end_with_a_json_result(tmp_path, ct_file, capsys):
    out = tmp_path / "synthetic.mha"
    assert run_cli(*translate_args(ct_file, out, "--model", "identity", "--progress-format", "lines")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("PROGRESS 0.0000")
    assert any(line.startswith("PROGRESS 1.0000") for line in lines)
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["output"] == str(out) and result["model"] == "identity"


def test_a_synthetic_ct_can_be_written_as_a_dicom_series(tmp_path, ct_file):
    out = tmp_path / "dicom_out"
    assert run_cli(*translate_args(ct_file, out, "--model", "identity")) == 0
    files = sorted(out.iterdir())
    assert len(files) == sitk.ReadImage(ct_file).GetSize()[2]


def test_python_dash_m_prints_one_error_line_without_a_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "MedTransCore", *translate_args(tmp_path / "missing.nii.gz", tmp_path / "o.nii.gz")],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def bad_inputs(tmp_path) -> dict[str, tuple[str, str]]:
    """name -> (input path, words the error must contain)."""
    cases = {}
    cases["2d"] = (
        write(sitk.GetImageFromArray(np.zeros((20, 20), np.float32) + np.arange(20)), tmp_path / "a.nii.gz"),
        "3D",
    )
    four_d = sitk.GetImageFromArray(
        np.random.default_rng(0).normal(size=(3, 8, 8, 8)).astype(np.float32), isVector=False
    )
    cases["4d"] = (write(four_d, tmp_path / "b.nii.gz"), "4D")
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    cases["empty"] = (str(tmp_path / "empty.nii.gz"), "empty")
    good = (tmp_path / "good.nii.gz").as_posix()
    write(ct_like_volume(), good)
    data = open(good, "rb").read()
    (tmp_path / "truncated.nii.gz").write_bytes(data[: len(data) // 2])
    cases["truncated"] = (str(tmp_path / "truncated.nii.gz"), "truncated")
    (tmp_path / "volume.xyz").write_bytes(b"hello")
    cases["extension"] = (str(tmp_path / "volume.xyz"), ".nrrd")
    nan = sitk.GetArrayFromImage(ct_like_volume())
    nan[2, 3, 4] = np.nan
    nan[1, 1, 1] = np.inf
    cases["nan"] = (write(sitk.GetImageFromArray(nan), tmp_path / "nan.mha"), "2")
    cases["constant"] = (
        write(sitk.GetImageFromArray(np.full((8, 8, 8), 5.0, np.float32)), tmp_path / "c.nrrd"),
        "constant",
    )
    raw = np.arange(512, dtype=np.float32).tobytes()
    (tmp_path / "zero.raw").write_bytes(raw)
    header = "NRRD0004\ntype: float\ndimension: 3\nsizes: 8 8 8\nspacings: 1 0 1\nencoding: raw\nendian: little\ndata file: zero.raw\n"
    (tmp_path / "zero.nhdr").write_text(header)
    cases["zero spacing"] = (str(tmp_path / "zero.nhdr"), "spacing")
    (tmp_path / "neg.nhdr").write_text(header.replace("spacings: 1 0 1", "spacings: 1 -2 1"))
    cases["negative spacing"] = (str(tmp_path / "neg.nhdr"), "spacing")
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:5] = 1
    labels[5:8] = 2
    cases["label map"] = (write(sitk.GetImageFromArray(labels), tmp_path / "labels.nii.gz"), "label")
    return cases


@pytest.mark.parametrize(
    "case",
    ["2d", "4d", "empty", "truncated", "extension", "nan", "constant", "zero spacing", "negative spacing", "label map"],
)
def test_a_bad_input_gets_a_one_line_error_and_leaves_no_output(tmp_path, capsys, case):
    source, words = bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "synthetic.nii.gz"
    out.parent.mkdir()
    assert run_cli(*translate_args(source, out, "--model", "identity")) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words.lower() in err.lower(), err
    assert list(out.parent.iterdir()) == []


def test_a_volume_too_large_for_the_memory_guard_is_refused(tmp_path, ct_file, capsys, monkeypatch):
    monkeypatch.setenv("MEDTRANS_MEMORY_LIMIT_MB", "10")
    out = tmp_path / "o.nii.gz"
    assert run_cli(*translate_args(ct_file, out, "--model", "identity")) == 1
    assert "memory limit is 10 MB" in capsys.readouterr().err and not out.exists()


def test_an_unsupported_pair_is_refused(tmp_path, ct_file, capsys):
    bundle = tiny_identity_bundle(tmp_path / "cbct-only")
    args = [
        "translate",
        ct_file,
        "--source-modality",
        "MR_T1",
        "--target-modality",
        "CT",
        "--output",
        tmp_path / "o.nii.gz",
    ]
    assert run_cli(*args, "--model", bundle.path) == 1
    assert "does not support MR_T1->CT" in capsys.readouterr().err


def test_the_output_may_not_be_the_input(ct_file, capsys):
    assert run_cli(*translate_args(ct_file, ct_file, "--model", "identity", "--overwrite")) == 1
    assert "is the input" in capsys.readouterr().err
    assert sitk.ReadImage(ct_file).GetSize() == ct_like_volume().GetSize()


def test_an_existing_output_is_kept_unless_overwrite_is_given(tmp_path, ct_file, capsys):
    out = tmp_path / "o.nrrd"
    out.write_text("precious")
    assert run_cli(*translate_args(ct_file, out, "--model", "identity")) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "precious"
    assert run_cli(*translate_args(ct_file, out, "--model", "identity", "--overwrite")) == 0
    assert sitk.ReadImage(str(out)).GetSize() == ct_like_volume().GetSize()
