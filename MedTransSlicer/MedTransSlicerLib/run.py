"""One translation in flight: export -> background CLI process -> comparison maths -> MRML result nodes.

Only :meth:`TranslationRun.poll` touches the scene, so a front end polls it from its GUI thread (a QTimer in
Slicer, the event loop in the browser) and the GUI never blocks: file export and the comparison maths run
in worker threads, inference in a separate process.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MedTransCore.errors import CancelledError, MedTransError
from MedTransCore.modalities import display_window

from . import results
from .process import ProcessRunner, errorMessage, parseLine
from .signals import Signal
from .volumes import addVolumeNode

# Share of the progress bar for the background process; the rest is comparison maths and node creation.
PROCESS_SHARE_WITH_REFERENCE = 0.85
PROCESS_SHARE = 0.97
# Progress messages of the run itself; every other message comes from the core's CLI.
STAGE_EXPORT = "writing the source volume"
STAGE_START = "starting the translation process"
# Files of the sources in the run's temporary folder (what the CLI reads).
SOURCE_FILE = "source.nrrd"


def extraSourceFile(modality: str) -> str:
    """The file name of the additional source of ``modality`` (registry keys are plain words)."""
    return f"source-{modality}.nrrd"


@dataclass
class TranslationOutputs:
    """The nodes a translation added to the scene (``None`` where not made).

    Attributes:
        syntheticNode: the synthetic volume, on exactly the source geometry, marked ``MedTrans.Synthetic=true``.
        differenceNode: synthetic minus reference (target unit), with the diverging colour table.
        uncertaintyNode: voxel-wise standard deviation over samples (``uncertainty=True``).
        metricsTableNode: MAE, ME, PSNR, SSIM, MS-SSIM, NMSE, NCC (+ per-tissue MAE for CT): columns ``Metric``,
            ``Value`` (the synthetic's), ``Unit``, and the baselines ``Source as is`` and ``Histogram matching``.
        transformNode: rigid transform moving the reference onto the synthetic (``alignReference=True``).
        metrics: the metric values as a dict.
        baselineMetrics: the same metrics, against the same reference in the same mask, for the baselines:
            ``{"source as is": {...}, "histogram matching": {...}}`` (``None`` without a reference).
        settings: model, version, family, steps, seed, device and modalities of the run
            (``source_modalities`` lists every source, the source volume's first).
        warnings: plausibility warnings of the core, and "the model does worse than <baseline>" when it loses to one
            (:func:`~MedTransSlicerLib.results.baselineWarnings`).
        limitations: what the model cannot do, from its bundle (show it wherever the result is shown).
    """

    syntheticNode: object
    differenceNode: object = None
    uncertaintyNode: object = None
    metricsTableNode: object = None
    transformNode: object = None
    metrics: dict | None = None
    settings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    limitations: str = ""
    baselineMetrics: dict[str, dict[str, float]] | None = None

    def statusText(self) -> str:
        """One paragraph for a status line: what was made, by which model, from which sources; limitations; warnings."""
        s = self.settings
        sources = " + ".join(s.get("source_modalities") or [s.get("source_modality", "?")])
        text = (
            f"Made {self.syntheticNode.GetName()} from {sources} with {s.get('model')} {s.get('version')} "
            f"on {s.get('device')}."
        )
        if self.limitations:
            text += f" Model limitations: {self.limitations}"
        if self.warnings:
            text += " Warnings: " + "; ".join(self.warnings)
        return text


@dataclass
class RunRequest:
    """Plain data read from the scene when the run starts (worker threads never touch MRML)."""

    sourceName: str
    sourceMatrix: np.ndarray
    parentTransformID: str | None
    sourceImage: sitk.Image
    targetModality: str
    command: Callable[[Path], list[str]]
    environment: dict[str, str]
    seed: int
    uncertainty: bool
    referenceImage: sitk.Image | None = None
    referenceName: str = ""
    alignReference: bool = False
    # Additional co-registered sources: modality -> image in the source volume's frame (exported next to it).
    extraImages: dict[str, sitk.Image] = field(default_factory=dict)
    # Every source: modality -> volume name, the source volume's first (recorded on the result nodes).
    sourceNames: dict[str, str] = field(default_factory=dict)
    # The model bundle folder passed to the CLI (``None``: the CLI picks); where the limitations are read.
    modelPath: str | None = None


@dataclass
class _Computed:
    synthetic: np.ndarray
    uncertainty: np.ndarray | None = None
    difference: np.ndarray | None = None
    metrics: dict | None = None
    baselineMetrics: dict[str, dict[str, float]] | None = None
    warnings: list[str] = field(default_factory=list)
    transform: sitk.Transform | None = None
    limitations: str = ""


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


class TranslationRun:
    """A cancellable translation; create it with ``MedTransLogic.translateAsync``.

    Signals: ``progressed(fraction, message)``, ``finished(TranslationOutputs)``, ``failed(message)``,
    ``cancelled()``. ``state`` is ``"exporting"``, ``"running"``, ``"finishing"``, ``"succeeded"``,
    ``"failed"`` or ``"cancelled"``.
    """

    def __init__(
        self,
        scene,
        request: RunRequest,
        runner: ProcessRunner,
        cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.progressed, self.finished, self.failed, self.cancelled = Signal(), Signal(), Signal(), Signal()
        self.scene, self.request, self.runner, self._cancelRequested = scene, request, runner, cancel
        self.state = "exporting"
        self.outputs: TranslationOutputs | None = None
        self.error: Exception | None = None
        self.warnings: list[str] = []
        self._payload: dict | None = None
        self._stage = (0.0, STAGE_EXPORT)
        self._reported: tuple[float, str] | None = None
        self._share = PROCESS_SHARE_WITH_REFERENCE if request.referenceImage is not None else PROCESS_SHARE
        self._folder = Path(tempfile.mkdtemp(prefix="medtrans-slicer-"))
        # Guards the temporary folder: whoever sees both "run ended" and "no thread working" deletes it.
        self._lock = threading.Lock()
        self._task = _Task(self._export, self._onTaskEnd)

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

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> TranslationOutputs:
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
        raise CancelledError("the translation was cancelled")

    # -- stages ------------------------------------------------------------------------------------------

    def _advance(self) -> None:
        if self.state == "exporting" and self._taskFinished():
            self.runner.start(self.request.command(self._folder), env=self.request.environment)
            self.state, self._stage = "running", (0.0, STAGE_START)
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

    def _export(self) -> None:
        sitk.WriteImage(self.request.sourceImage, str(self._folder / SOURCE_FILE))
        for modality, image in self.request.extraImages.items():
            sitk.WriteImage(image, str(self._folder / extraSourceFile(modality)))

    # -- comparison maths (worker thread: SimpleITK and numpy only) --------------------------------------

    # MedTransCore.metrics needs scipy, which Slicer does not ship: imported here, after the dependencies are in.

    def _readOnSourceGrid(self, path: str) -> np.ndarray:
        from MedTransCore.metrics import grid_difference

        image = sitk.ReadImage(path, sitk.sitkFloat32)
        if (difference := grid_difference(image, self.request.sourceImage)) is not None:
            raise MedTransError(f"the model's output is not on the source grid ({difference})")
        return sitk.GetArrayFromImage(image)

    def _compute(self) -> _Computed:
        from MedTransCore.metrics import compute_metrics, difference_map, reference_body_mask

        request, payload = self.request, self._payload
        computed = _Computed(self._readOnSourceGrid(payload["output"]))
        computed.limitations = results.modelLimitations(payload, request.modelPath)
        if payload.get("uncertainty"):
            computed.uncertainty = self._readOnSourceGrid(payload["uncertainty"])
        if request.referenceImage is not None:
            reference, inside = self._referenceOnSourceGrid(computed)
            computed.difference = difference_map(computed.synthetic, reference).astype(np.float32)
            self._stage = (self._share + 0.9 * (1 - self._share), "computing metrics")
            referenceImage = sitk.GetImageFromArray(reference)
            referenceImage.CopyInformation(request.sourceImage)
            # Scored inside the reference's body (and its field of view): air around the patient says nothing.
            mask = reference_body_mask(referenceImage, request.targetModality)
            if inside is not None:
                mask &= inside
            computed.metrics = compute_metrics(computed.synthetic, reference, request.targetModality, mask=mask)
            computed.baselineMetrics = self._baselineMetrics(reference, mask)
            computed.warnings = results.baselineWarnings(
                computed.metrics, computed.baselineMetrics, request.targetModality
            )
        return computed

    def _baselineMetrics(self, reference: np.ndarray, mask: np.ndarray) -> dict[str, dict[str, float]]:
        """:func:`~MedTransSlicerLib.results.baselineMetrics` of the run's source (a stage of its own)."""
        self._stage = (
            self._share + 0.95 * (1 - self._share),
            "scoring the baselines (source as is, histogram matching)",
        )
        source = sitk.GetArrayFromImage(sitk.Cast(self.request.sourceImage, sitk.sitkFloat32))
        return results.baselineMetrics(source, reference, mask, self.request.targetModality)

    def _referenceOnSourceGrid(self, computed: _Computed) -> tuple[np.ndarray, np.ndarray | None]:
        """The reference resampled onto the synthetic grid (aligned if asked) and its field-of-view mask."""
        from MedTransCore.metrics import grid_difference
        from MedTransCore.registration import register_rigid

        request = self.request
        synthetic = sitk.GetImageFromArray(computed.synthetic)
        synthetic.CopyInformation(request.sourceImage)
        moving = sitk.Cast(request.referenceImage, sitk.sitkFloat32)
        transform = sitk.Transform(3, sitk.sitkIdentity)
        if request.alignReference:
            span = 0.6 * (1 - self._share)

            def report(fraction: float) -> None:
                self._stage = (self._share + span * fraction, "aligning the reference (rigid)")

            registration = register_rigid(synthetic, moving, progress=report, seed=request.seed)
            transform = computed.transform = registration.transform
        elif grid_difference(moving, synthetic) is None:
            return sitk.GetArrayFromImage(moving), None
        background = float(np.min(sitk.GetArrayViewFromImage(moving)))
        resampled = sitk.Resample(moving, synthetic, transform, sitk.sitkLinear, background, sitk.sitkFloat32)
        inside = sitk.Resample(moving * 0 + 1, synthetic, transform, sitk.sitkNearestNeighbor, 0.0)
        mask = sitk.GetArrayFromImage(inside) > 0
        if not mask.any():
            raise MedTransError("the reference does not overlap the source volume; check its position or align it")
        return sitk.GetArrayFromImage(resampled), None if mask.all() else mask

    # -- MRML (GUI thread) -------------------------------------------------------------------------------

    def _createNodes(self, computed: _Computed) -> TranslationOutputs:
        """Add the result nodes; on any failure remove the ones already added and re-raise."""
        request, scene = self.request, self.scene
        self.warnings.extend(w for w in computed.warnings if w not in self.warnings)
        settings = {k: v for k, v in self._payload.items() if k not in ("output", "uncertainty")}
        if request.sourceNames:
            settings.setdefault("source_modalities", list(request.sourceNames))
        created = []

        def mark(node, kind: str, synthetic: bool) -> None:
            results.markResult(
                node, kind, settings, self.warnings, synthetic=synthetic, limitations=computed.limitations,
                sourceNames=request.sourceNames,
            )  # fmt: skip

        def add(array: np.ndarray, kind: str, synthetic: bool):
            name = results.resultName(request.sourceName, request.targetModality, kind)
            node = addVolumeNode(scene, array, request.sourceMatrix, name, request.parentTransformID)
            created.append(node)
            mark(node, kind, synthetic)
            return node

        hadColors = results.findDivergingColorNode(scene) is not None
        try:
            outputs = TranslationOutputs(
                add(computed.synthetic, "synthetic", True),
                settings=settings,
                warnings=list(self.warnings),
                limitations=computed.limitations,
            )
            results.setWindowLevel(outputs.syntheticNode, *display_window(request.targetModality, computed.synthetic))
            if computed.uncertainty is not None:
                outputs.uncertaintyNode = add(computed.uncertainty, "uncertainty", True)
                top = results.symmetricRange(computed.uncertainty)
                results.setWindowLevel(outputs.uncertaintyNode, top / 2, top)
            if computed.difference is not None:
                outputs.differenceNode = add(computed.difference, "difference", False)
                colors = results.divergingColorNode(scene)
                if not hadColors:
                    created.append(colors)
                span = results.symmetricRange(computed.difference)
                results.setWindowLevel(outputs.differenceNode, 0.0, 2 * span, colors.GetID())
            if computed.metrics is not None:
                name = results.resultName(request.sourceName, request.targetModality, "metrics")
                outputs.metricsTableNode = results.addMetricsTable(
                    scene, computed.metrics, request.targetModality, name, computed.baselineMetrics
                )
                created.append(outputs.metricsTableNode)
                mark(outputs.metricsTableNode, "metrics", False)
                outputs.metrics = dict(computed.metrics)
                if computed.baselineMetrics is not None:
                    outputs.baselineMetrics = {k: dict(v) for k, v in computed.baselineMetrics.items()}
            if computed.transform is not None:
                name = f"{request.referenceName} -> {request.sourceName} -> {request.targetModality} (rigid)"
                outputs.transformNode = results.addRigidTransform(scene, computed.transform, name)
                created.append(outputs.transformNode)
                mark(outputs.transformNode, "alignment", False)
        except Exception:
            for node in reversed(created):
                scene.RemoveNode(node)
            raise
        return outputs
