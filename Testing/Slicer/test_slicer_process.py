"""The background process runner and the parsing of the CLI's progress lines (real processes)."""

from __future__ import annotations

import os
import sys
import time

import pytest

from MedTransSlicerLib.process import SubprocessRunner, errorMessage, parseLine, translateCommand


def _waitFor(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_progress_warning_and_result_lines_are_parsed():
    progress = parseLine("PROGRESS 0.4250 translating (unet)")
    assert (progress.kind, progress.fraction, progress.text) == ("progress", 0.425, "translating (unet)")
    assert parseLine("WARNING source looks like MR").text == "source looks like MR"
    result = parseLine('RESULT {"output": "/tmp/x.nrrd", "model": "identity"}')
    assert result.kind == "result" and result.payload["model"] == "identity"
    assert parseLine("PROGRESS 7 clamped").fraction == 1.0
    assert parseLine("Downloading nothing").kind == "other"
    assert parseLine("RESULT {not json").kind == "other"


def test_the_error_line_of_the_cli_becomes_the_message():
    stderr = "Traceback?\nerror: no installed model supports MR_T1->CT_ARTERIAL; see `medtrans models`\n"
    assert errorMessage(stderr, 1) == "no installed model supports MR_T1->CT_ARTERIAL; see `medtrans models`"
    assert "exit code -9" in errorMessage("", -9)


def test_the_command_asks_the_core_cli_for_machine_readable_progress(tmp_path):
    args = translateCommand(
        "python", tmp_path / "in.nrrd", tmp_path / "out.nrrd", "CBCT", "CT",
        model="identity", steps=None, seed=3, device="cpu", uncertaintyPath=None,
    )  # fmt: skip
    assert args[:4] == ["python", "-m", "MedTransCore", "translate"]
    joined = " ".join(args)
    assert "--progress-format lines" in joined and "--seed 3" in joined and "--model identity" in joined
    assert "--steps" not in args and "--uncertainty" not in args


def test_the_runner_streams_stdout_lines_and_reports_the_exit_code():
    runner = SubprocessRunner()
    script = "import sys; print('PROGRESS 0.5 half', flush=True); print('oops', file=sys.stderr); sys.exit(3)"
    runner.start([sys.executable, "-c", script])
    _waitFor(lambda: runner.returnCode() is not None)
    assert runner.readLines() == ["PROGRESS 0.5 half"]
    assert runner.returnCode() == 3
    assert runner.errorText() == "oops"


@pytest.mark.skipif(os.name != "posix", reason="checks process ids the POSIX way")
def test_killing_the_runner_ends_the_whole_process_tree():
    runner = SubprocessRunner()
    script = (
        "import subprocess, sys, time;"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "print(child.pid, flush=True); time.sleep(60)"
    )
    runner.start([sys.executable, "-c", script])
    lines = []
    _waitFor(lambda: lines.extend(runner.readLines()) or lines)
    child = int(lines[0])
    runner.kill()
    assert runner.returnCode() is not None

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A killed child of a killed parent may linger as a zombie until init reaps it.
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] == "Z"

    _waitFor(lambda: gone(child), timeout=10)
