"""One translation in flight: export -> background CLI process -> comparison maths -> MRML result nodes.

The process, threads, progress and cancellation are :class:`~MedTransSlicerLib.background.BackgroundRun`'s; this
module says what a translation exports, runs, computes and adds to the scene.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MedTransCore.errors import MedTransError
from MedTransCore.modalities import display_window

from . import results
from .background import BackgroundRun
from .process import ProcessRunner
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


class TranslationRun(BackgroundRun):
    """A cancellable translation; create it with ``MedTransLogic.translateAsync`` (see :class:`BackgroundRun`).

    ``finished`` carries the :class:`TranslationOutputs`.
    """

    what = "translation"
    stageExport = STAGE_EXPORT
    stageStart = STAGE_START

    def __init__(
        self,
        scene,
        request: RunRequest,
        runner: ProcessRunner,
        cancel: Callable[[], bool] | None = None,
    ) -> None:
        self.request = request  # before the export thread starts
        share = PROCESS_SHARE_WITH_REFERENCE if request.referenceImage is not None else PROCESS_SHARE
        super().__init__(scene, runner, cancel, share)

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return self.request.command(self._folder), self.request.environment

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
