"""Progress output: a few plain lines when stderr is a log (not a terminal), the PROGRESS contract for front ends."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
import SimpleITK as sitk

from MedTransCore.cli.progress import ProgressPrinter, track

from .helpers import ct_like_volume

PROGRESS_LINE = re.compile(r"^PROGRESS [01]\.\d{4} \S.*$")


def medtrans(*argv, cwd) -> subprocess.CompletedProcess:
    """``python -m MedTransCore ...`` with stdout and stderr captured as bytes (pipes: not terminals)."""
    return subprocess.run(
        [sys.executable, "-m", "MedTransCore", *map(str, argv)], cwd=cwd, capture_output=True, timeout=600
    )


@pytest.fixture
def ct_file(tmp_path):
    path = tmp_path / "source.nrrd"
    sitk.WriteImage(ct_like_volume(), str(path))
    return path


def translate_args(source, output, *extra):
    return ["translate", source, "--source-modality", "CBCT", "--target-modality", "CT", "--output", output, *extra]


def test_a_translation_logged_to_a_file_shows_a_few_plain_progress_lines(tmp_path, ct_file):
    result = medtrans(*translate_args(ct_file, tmp_path / "synthetic.nrrd", "--model", "identity"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"\r" not in result.stderr  # no bar redraws in a log
    lines = result.stderr.decode().splitlines()
    progress = [line for line in lines if line.startswith("translating:")]
    assert 3 <= len(progress) <= 10, lines
    assert progress[0].startswith("translating:   0% loading model identity")
    assert progress[-1] == "translating: 100% done"
    assert b"wrote SYNTHETIC CT" in result.stdout


def test_machine_readable_progress_keeps_the_format_the_slicer_module_parses(tmp_path, ct_file):
    out = tmp_path / "synthetic.nrrd"
    result = medtrans(*translate_args(ct_file, out, "--model", "identity", "--progress-format", "lines"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"\r" not in result.stderr and b"translating" not in result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "PROGRESS 0.0000 loading model identity"
    assert all(PROGRESS_LINE.match(line) for line in lines[:-1]), lines
    assert "PROGRESS 1.0000 done" in lines
    assert json.loads(lines[-1].removeprefix("RESULT "))["output"] == str(out)


def test_plain_progress_prints_each_stage_and_quarter_once_however_often_it_is_called():
    log = io.StringIO()  # not a terminal
    progress = ProgressPrinter("bar", "translating", stream=log)
    assert progress.mode == "plain"
    progress(0.0, "loading model")
    for step in range(1000):
        progress(0.05 + 0.9 * step / 999, "translating (aldm)")
    progress(1.0, "done")
    progress.close()
    assert log.getvalue().splitlines() == [
        "translating:   0% loading model",
        "translating:   5% translating (aldm)",
        "translating:  25% translating (aldm)",
        "translating:  50% translating (aldm)",
        "translating:  75% translating (aldm)",
        "translating: 100% done",
    ]


def test_an_unknown_progress_mode_is_refused_with_the_accepted_ones():
    with pytest.raises(ValueError, match="bar, plain, lines"):
        ProgressPrinter("fancy")


def test_items_tracked_into_a_log_get_one_plain_line_each():
    log = io.StringIO()
    assert list(track(["a", "b", "c"], "batch", "case", stream=log)) == ["a", "b", "c"]
    assert log.getvalue().splitlines() == ["batch: case 1/3", "batch: case 2/3", "batch: case 3/3"]


def test_a_batch_logged_to_a_file_shows_one_plain_line_per_case(tmp_path, ct_file):
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"input,source_modality,target_modality,case\n{ct_file},CBCT,CT,one\n{ct_file},CBCT,CT,two\n")
    result = medtrans("batch", manifest, "--out", tmp_path / "results", "--model", "identity", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert b"\r" not in result.stderr
    assert [line for line in result.stderr.decode().splitlines() if line.startswith("batch:")] == [
        "batch: case 1/2",
        "batch: case 2/2",
    ]
