"""The background process that runs the core's CLI, and the parsing of its progress lines.

Inference never runs in the GUI process: the logic starts ``python -m MedTransCore translate ...
--progress-format lines`` (PythonSlicer inside Slicer) and reads its stdout without blocking. The runner is
injected into the logic (SlicerNNUnet style) so a front end or a test can supply its own.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class ProcessRunner(Protocol):
    """What the logic needs from a process runner (one process per runner)."""

    def start(self, args: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``args`` (program first) without waiting for it."""

    def readLines(self) -> list[str]:
        """The stdout lines received since the last call, without blocking."""

    def returnCode(self) -> int | None:
        """The exit code, or ``None`` while the process runs (or its output is still being read)."""

    def errorText(self) -> str:
        """Everything the process wrote to stderr so far."""

    def kill(self) -> None:
        """Kill the process and every process it started; return once it has exited."""


class SubprocessRunner:
    """:class:`ProcessRunner` on ``subprocess.Popen``, reading stdout/stderr in two daemon threads.

    The child gets its own process group (a new session on POSIX) so :meth:`kill` ends the whole tree, e.g. the
    data-loader workers torch may start.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lines: queue.Queue[str] = queue.Queue()
        self._stderr: list[str] = []
        self._readers: list[threading.Thread] = []

    def start(self, args: list[str], env: dict[str, str] | None = None) -> None:
        if self._process is not None:
            raise RuntimeError("this runner already started a process; create a new runner")
        options = {"start_new_session": True} if os.name == "posix" else {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        self._process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **options,
        )
        self._readers = [
            threading.Thread(target=self._pump, args=(self._process.stdout, self._lines.put), daemon=True),
            threading.Thread(target=self._pump, args=(self._process.stderr, self._stderr.append), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream, sink) -> None:
        for line in stream:
            sink(line.rstrip("\r\n"))
        stream.close()

    def readLines(self) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(self._lines.get_nowait())
            except queue.Empty:
                return lines

    def returnCode(self) -> int | None:
        if self._process is None:
            return None
        code = self._process.poll()
        # Report the exit only once both pipes are drained, so no line is lost.
        if code is None or any(reader.is_alive() for reader in self._readers):
            return None
        return code

    def errorText(self) -> str:
        return "\n".join(self._stderr)

    def kill(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        if os.name == "nt":
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
        else:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=5)


def defaultPythonExecutable() -> str:
    """The interpreter that runs the core: PythonSlicer inside the Slicer application, else this Python."""
    import slicer

    if hasattr(slicer, "app"):  # the desktop application, not the slicer-core wheel
        return shutil.which("PythonSlicer") or sys.executable
    return sys.executable


def childEnvironment() -> dict[str, str]:
    """This process's environment plus the folder that holds ``MedTransCore`` on ``PYTHONPATH``.

    A source checkout (``Add module path`` in Slicer) is not installed, so the child must be told where it is.
    """
    import MedTransCore

    env = dict(os.environ)
    root = str(Path(MedTransCore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def translateCommand(
    python: str,
    inputPath: Path,
    outputPath: Path,
    sourceModality: str,
    targetModality: str,
    *,
    model: str | None,
    steps: int | None,
    seed: int,
    device: str,
    uncertaintyPath: Path | None,
    extraInputs: Sequence[tuple[str, Path]] = (),
) -> list[str]:
    """The ``python -m MedTransCore translate`` command line (see the CLI contract); ``model=None``: the CLI's pick.

    Args:
        extraInputs: ``(modality, path)`` of additional co-registered sources. With any, every source is passed as
            ``--input MODALITY=PATH``, the source first (the reference grid); without, the positional input and
            ``--source-modality`` are used.
    """
    args = [python, "-m", "MedTransCore", "translate"]
    if extraInputs:
        for modality, path in [(sourceModality, inputPath), *extraInputs]:
            args += ["--input", f"{modality}={path}"]
        args += ["--output", str(outputPath), "--target-modality", targetModality]
    else:
        args += [str(inputPath), "--output", str(outputPath)]
        args += ["--source-modality", sourceModality, "--target-modality", targetModality]
    args += ["--seed", str(seed), "--device", device, "--progress-format", "lines", "--overwrite"]
    if model is not None:
        args += ["--model", model]
    if steps is not None:
        args += ["--steps", str(steps)]
    if uncertaintyPath is not None:
        args += ["--uncertainty", str(uncertaintyPath)]
    return args


@dataclass
class ProgressLine:
    """One parsed stdout line of the CLI.

    Attributes:
        kind: ``"progress"``, ``"warning"``, ``"result"`` or ``"other"``.
        fraction: progress in [0, 1] (progress lines).
        text: the stage words, the warning, or the raw line.
        payload: the RESULT json (result lines).
    """

    kind: str
    fraction: float = 0.0
    text: str = ""
    payload: dict | None = None


def parseLine(line: str) -> ProgressLine:
    """Parse ``PROGRESS <fraction> <stage>``, ``WARNING <text>`` or ``RESULT <json>``; anything else is "other"."""
    head, _, rest = line.partition(" ")
    if head == "PROGRESS":
        fraction, _, stage = rest.partition(" ")
        try:
            return ProgressLine("progress", min(max(float(fraction), 0.0), 1.0), stage)
        except ValueError:
            return ProgressLine("other", text=line)
    if head == "WARNING":
        return ProgressLine("warning", text=rest)
    if head == "RESULT":
        try:
            return ProgressLine("result", 1.0, payload=json.loads(rest))
        except json.JSONDecodeError:
            return ProgressLine("other", text=line)
    return ProgressLine("other", text=line)


def errorMessage(stderr: str, returnCode: int) -> str:
    """The user-facing message of a failed run: the CLI's ``error: ...`` line, else the end of stderr."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error: "):
            return line[len("error: ") :]
    tail = " | ".join(lines[-3:]) if lines else "no error output"
    return f"the translation process failed (exit code {returnCode}): {tail}"
