"""A background job of a front end: export (worker thread) -> a core CLI process -> maths (worker thread) -> nodes.

Only :meth:`BackgroundRun.poll` touches the scene, so a front end polls it from its GUI thread (a QTimer in
Slicer, the event loop in the browser) and the GUI never blocks. Subclasses say what to export, which command to
run, what to compute from its outputs and which nodes to add: :class:`~MedTransSlicerLib.run.TranslationRun` and
:class:`~MedTransSlicerLib.dose.DoseRun`.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from MedTransCore.errors import CancelledError, MedTransError

from .process import ProcessRunner, errorMessage, parseLine
from .signals import Signal


class _Task(threading.Thread):
    """A daemon thread that keeps its function's result or exception and calls ``onEnd`` when it ends."""

    def __init__(self, function: Callable[[], object], onEnd: Callable[[_Task], None]) -> None:
        super().__init__(daemon=True)
        self._function, self._onEnd = function, onEnd
        self.result, self.error, self.ended = None, None, False
        self.start()

    def run(self) -> None:
        try:
            self.result = self._function()
        except Exception as exc:  # handed to the GUI thread by poll()
            self.error = exc
        finally:
            self._onEnd(self)


class BackgroundRun:
    """A cancellable background job.

    Signals: ``progressed(fraction, message)``, ``finished(outputs)``, ``failed(message)``, ``cancelled()``.
    ``state`` is ``"exporting"``, ``"running"``, ``"finishing"``, ``"succeeded"``, ``"failed"`` or ``"cancelled"``.

    Args:
        scene: the MRML scene the result nodes go to.
        runner: runs the command (:class:`~MedTransSlicerLib.process.ProcessRunner`).
        cancel: polled by :meth:`poll`; True cancels the run.
        share: the part of the progress bar the process's own ``PROGRESS`` lines fill.
    """

    #: What the job is, for the cancellation message.
    what = "job"
    #: Progress messages before the process reports its own.
    stageExport = "writing the inputs"
    stageStart = "starting the background process"

    def __init__(self, scene, runner: ProcessRunner, cancel: Callable[[], bool] | None, share: float) -> None:
        self.progressed, self.finished, self.failed, self.cancelled = Signal(), Signal(), Signal(), Signal()
        self.scene, self.runner, self._cancelRequested = scene, runner, cancel
        self.state = "exporting"
        self.outputs = None
        self.error: Exception | None = None
        self.warnings: list[str] = []
        self._payload: dict | None = None
        self._stage = (0.0, self.stageExport)
        self._reported: tuple[float, str] | None = None
        self._share = share
        self._folder = Path(tempfile.mkdtemp(prefix="medtrans-slicer-"))
        # Guards the temporary folder: whoever sees both "run ended" and "no thread working" deletes it.
        self._lock = threading.Lock()
        self._task = _Task(self._export, self._onTaskEnd)

    # -- what a subclass provides ------------------------------------------------------------------------

    def _export(self) -> None:
        """Worker thread: write the inputs into ``self._folder``."""
        raise NotImplementedError

    def _command(self) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of the process (it ends with a ``RESULT`` line)."""
        raise NotImplementedError

    def _compute(self):
        """Worker thread: read the process's outputs (``self._payload``) and do the maths; returns what
        :meth:`_createNodes` needs."""
        raise NotImplementedError

    def _createNodes(self, computed):
        """GUI thread: add the result nodes (removing any already added on failure) and return the outputs."""
        raise NotImplementedError

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    def poll(self) -> bool:
        """Advance the run without blocking; call it from the GUI thread. Returns True once it has ended."""
        if self.done:
            return True
        if self._cancelRequested is not None and self._cancelRequested():
            self.cancel()
            return True
        try:
            self._advance()
        except Exception as exc:  # every failure ends the run and reaches the front end through `failed`
            self._fail(exc)
            return True
        self._emitProgress()
        if self.state == "succeeded":  # outside the try: a failing slot must not turn a success into a failure
            self.finished.emit(self.outputs)
        return self.done

    def cancel(self) -> None:
        """Kill the background process tree and end the run; the scene is left as it was."""
        if self.done:
            return
        with self._lock:
            self.state = "cancelled"
        self.runner.kill()
        self._cleanupIfIdle()
        self.cancelled.emit()

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> object:
        """Poll until the run ends (blocking); return its outputs or raise its error.

        Raises:
            CancelledError: the run was cancelled (or ``timeout`` seconds passed, which cancels it).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                break
            time.sleep(interval)
        if self.state == "succeeded":
            return self.outputs
        if self.state == "failed":
            raise self.error
        raise CancelledError(f"the {self.what} was cancelled")

    # -- stages ------------------------------------------------------------------------------------------

    def _advance(self) -> None:
        if self.state == "exporting" and self._taskFinished():
            command, environment = self._command()
            self.runner.start(command, env=environment)
            self.state, self._stage = "running", (0.0, self.stageStart)
        if self.state == "running":
            for line in self.runner.readLines():
                self._handleLine(line)
            code = self.runner.returnCode()
            if code is None:
                return
            if code != 0 or self._payload is None:
                raise MedTransError(errorMessage(self.runner.errorText(), code))
            self.state, self._stage = "finishing", (self._share, "reading the result")
            self._task = _Task(self._compute, self._onTaskEnd)
        if self.state == "finishing" and self._taskFinished():
            computed = self._task.result
            self._cleanup()
            self.outputs = self._createNodes(computed)
            self.state, self._stage = "succeeded", (1.0, "done")

    def _taskFinished(self) -> bool:
        if not self._task.ended:
            return False
        if self._task.error is not None:
            raise self._task.error
        return True

    def _handleLine(self, line: str) -> None:
        parsed = parseLine(line)
        if parsed.kind == "progress":
            self._stage = (parsed.fraction * self._share, parsed.text)
        elif parsed.kind == "warning":
            self.warnings.append(parsed.text)
        elif parsed.kind == "result":
            self._payload = parsed.payload

    def _emitProgress(self) -> None:
        if self._stage != self._reported and self.state != "cancelled":
            self._reported = self._stage
            self.progressed.emit(*self._stage)

    def _fail(self, error: Exception) -> None:
        with self._lock:
            self.state, self.error = "failed", error
        self.runner.kill()
        self._cleanupIfIdle()
        message = str(error) if isinstance(error, MedTransError) else f"{type(error).__name__}: {error}"
        self.failed.emit(message)

    def _cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)

    def _cleanupIfIdle(self) -> None:
        with self._lock:
            if self._task.ended:
                self._cleanup()

    def _onTaskEnd(self, task: _Task) -> None:
        # A run that ended while this thread worked could not delete the folder then: do it now.
        with self._lock:
            task.ended = True
            if self.done:
                self._cleanup()
