"""``MedTransLogic``: translate an MRML volume node with the core, on any MRML scene (no Qt, no dialogs)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import slicer

from MedTransCore.bundles import Bundle, find_bundle, installed_bundles, select_bundle
from MedTransCore.errors import InputError, MedTransError
from MedTransCore.modalities import get_modality

from . import guess, layout, preflight, volumes
from .dose import DoseOutputs, DoseRun, doseRequest
from .preflight import Preflight
from .process import ProcessRunner, SubprocessRunner, childEnvironment, defaultPythonExecutable, translateCommand
from .run import SOURCE_FILE, RunRequest, TranslationOutputs, TranslationRun, extraSourceFile
from .signals import Signal

Progress = Callable[[float, str], None]
# Additional sources: {modality: volume node}, or (modality, volume node) rows as a GUI lists them (duplicates
# in rows are refused instead of silently dropped).
ExtraSources = Mapping[str, object] | Iterable[tuple[str, object]]
DEVICES = {"auto": "auto", "cpu": "cpu", "cuda": "cuda", "gpu": "cuda"}


class MedTransLogic:
    """Translation of MRML volume nodes for every front end (desktop widget, browser, scripts).

    Args:
        scene: the MRML scene results are added to (``slicer.mrmlScene`` in Slicer).
        runnerFactory: makes one :class:`~MedTransSlicerLib.process.ProcessRunner` per run (default:
            :class:`~MedTransSlicerLib.process.SubprocessRunner`).
        pythonExecutable: interpreter of the background process (default: PythonSlicer inside Slicer, else
            ``sys.executable``).

    Signals:
        errorOccurred(message): a translation could not start or failed (the same error is also raised by
            :meth:`translate` and :meth:`translateAsync`, or reported by the run's ``failed`` signal).
    """

    def __init__(
        self,
        scene: slicer.vtkMRMLScene,
        runnerFactory: Callable[[], ProcessRunner] | None = None,
        pythonExecutable: str | None = None,
    ) -> None:
        if scene is None:
            raise ValueError("MedTransLogic needs an MRML scene")
        self.scene = scene
        self.runnerFactory = runnerFactory or SubprocessRunner
        self.pythonExecutable = pythonExecutable or defaultPythonExecutable()
        self.errorOccurred = Signal()

    # -- translation -------------------------------------------------------------------------------------

    def translate(
        self,
        sourceNode,
        sourceModality: str,
        targetModality: str,
        model: str | Path | None = None,
        referenceNode=None,
        steps: int | None = None,
        seed: int = 0,
        device: str = "auto",
        uncertainty: bool = False,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
        alignReference: bool = False,
        *,
        extraSources: ExtraSources | None = None,
    ) -> TranslationOutputs:
        """Translate ``sourceNode`` and wait for the result (the work still runs in a background process).

        Args:
            sourceNode: scalar volume node to translate (never modified).
            sourceModality: registry key of the source, e.g. ``"CBCT"``.
            targetModality: registry key of the target, e.g. ``"CT"``.
            model: bundle name or folder; ``None`` picks the best installed model for the pair.
            referenceNode: optional real volume of the target modality: adds a difference map and metrics, with the
                same metrics for the source as is and for its histogram matched to the reference (the baselines).
            steps: sampler steps for diffusion models (``None``: the model's default).
            seed: random seed (same seed, same result).
            device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``"gpu"`` is accepted for ``"cuda"``).
            uncertainty: also compute the voxel-wise standard deviation over samples (stochastic models).
            progress: called with ``(fraction in [0, 1], message)``.
            cancel: polled while waiting; returning True kills the process and raises ``CancelledError``.
            alignReference: rigidly register the reference onto the synthetic volume first (a reference
                acquired on another day); keeps the transform as a node.
            extraSources: additional co-registered sources for models that take several sequences, e.g.
                ``{"MR_FLAIR": flairNode}`` (or ``(modality, node)`` rows). Each modality once, none the target,
                no node twice nor the source node; they are resampled onto the source's grid by the core, so the
                result stays on exactly the source geometry.

        Returns:
            The added nodes (see :class:`TranslationOutputs`).

        Raises:
            MedTransError: bad input (a target that is the source's modality, a reference that is the source or does
                not overlap it), unsupported pair, failed run (nothing is added to the scene); ``CancelledError``
                when cancelled. :meth:`preflight` says the same before anything is started.
        """
        run = self.translateAsync(
            sourceNode, sourceModality, targetModality, model, referenceNode, steps, seed, device, uncertainty,
            progress, cancel, alignReference=alignReference, extraSources=extraSources,
        )  # fmt: skip
        return run.wait()

    def translateAsync(
        self,
        sourceNode,
        sourceModality: str,
        targetModality: str,
        model: str | Path | None = None,
        referenceNode=None,
        steps: int | None = None,
        seed: int = 0,
        device: str = "auto",
        uncertainty: bool = False,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
        alignReference: bool = False,
        *,
        extraSources: ExtraSources | None = None,
    ) -> TranslationRun:
        """Start a translation and return at once; arguments as :meth:`translate`.

        The caller polls ``run.poll()`` from its GUI thread (e.g. every 100 ms) until it returns True, and may
        call ``run.cancel()`` at any time. Input errors raise here, before anything starts.
        """
        try:
            request = self._request(
                sourceNode, sourceModality, targetModality, model, referenceNode, steps, seed, device,
                uncertainty, alignReference, extraSources,
            )  # fmt: skip
        except MedTransError as error:
            self.errorOccurred.emit(str(error))
            raise
        run = TranslationRun(self.scene, request, self.runnerFactory(), cancel=cancel)
        if progress is not None:
            run.progressed.connect(progress)
        run.failed.connect(self.errorOccurred.emit)
        return run

    def _request(
        self, sourceNode, sourceModality, targetModality, model, referenceNode, steps, seed, device, uncertainty,
        alignReference, extraSources=None,
    ) -> RunRequest:  # fmt: skip
        """Check every input and read what the run needs from the scene (raises ``InputError``)."""
        volumes.checkScalarVolume(sourceNode, "source")
        if referenceNode is not None:
            refusal, _ = preflight.referenceCheck(referenceNode, sourceNode)
            if refusal:
                raise InputError(refusal)
        elif alignReference:
            raise InputError("aligning the reference needs a reference volume")
        get_modality(sourceModality), get_modality(targetModality)
        extras = self._checkExtraSources(sourceNode, sourceModality, targetModality, extraSources)
        preflight.checkModalities(sourceModality, targetModality)
        if str(device).lower() not in DEVICES:
            raise InputError(f"unknown device {device!r}; choose auto, cpu or cuda")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise InputError(f"steps must be a positive whole number, got {steps!r}")
        if extras:
            modelPath = self._checkModelForSources([sourceModality, *extras], targetModality, model)
        else:
            modelPath = self._checkModel(sourceModality, targetModality, model)

        matrix = volumes.ijkToRas(sourceNode)
        sourceImage = volumes.imageFromVolume(sourceNode, matrix)
        referenceImage = None
        if referenceNode is not None:
            referenceImage = volumes.imageFromVolume(
                referenceNode, volumes.ijkToRasInFrameOf(referenceNode, sourceNode)
            )

        # Each additional source in the source's frame (parent transforms applied); the core resamples it.
        extraImages = {
            modality: volumes.imageFromVolume(node, volumes.ijkToRasInFrameOf(node, sourceNode))
            for modality, node in extras.items()
        }

        def command(folder: Path) -> list[str]:
            return translateCommand(
                self.pythonExecutable, folder / SOURCE_FILE, folder / "synthetic.nrrd", sourceModality,
                targetModality, model=modelPath, steps=steps, seed=int(seed),
                device=DEVICES[str(device).lower()], uncertaintyPath=folder / "uncertainty.nrrd" if uncertainty else None,
                extraInputs=[(modality, folder / extraSourceFile(modality)) for modality in extras],
            )  # fmt: skip

        return RunRequest(
            sourceName=sourceNode.GetName(),
            sourceMatrix=matrix,
            parentTransformID=sourceNode.GetTransformNodeID(),
            sourceImage=sourceImage,
            targetModality=targetModality,
            command=command,
            environment=childEnvironment(),
            seed=int(seed),
            uncertainty=bool(uncertainty),
            referenceImage=referenceImage,
            referenceName=referenceNode.GetName() if referenceNode is not None else "",
            alignReference=bool(alignReference),
            extraImages=extraImages,
            sourceNames={sourceModality: sourceNode.GetName(), **{m: n.GetName() for m, n in extras.items()}},
            modelPath=modelPath,
        )

    # The additional sources as an ordered {modality: node}; raises InputError for a bad one (shared with preflight).
    _checkExtraSources = staticmethod(preflight.checkExtraSources)

    @staticmethod
    def _checkModel(sourceModality: str, targetModality: str, model: str | Path | None) -> str | None:
        """The named bundle's folder, checked to support the pair (cheap: no torch in the GUI process).

        Without a name, some installed bundle must support the pair, but which one runs is the core's choice: it
        looks at the volume (skull-stripped brain, whole head, phantom) and never hands a patient scan to a
        phantom-trained model, so ``None`` is returned and the run's command names no model.
        """
        bundle = select_bundle(sourceModality, targetModality, model)
        return None if model is None else str(bundle.path)

    @staticmethod
    def _checkModelForSources(sourceModalities: list[str], targetModality: str, model: str | Path | None) -> str | None:
        """The named bundle's folder for several sources (``None`` without a name: the core picks the model).

        Whether a model takes this set of sources is the core's decision (its bundles state the sets): a set it
        refuses fails the run with the core's message, and nothing is added.
        """
        for modality in (*sourceModalities, targetModality):
            get_modality(modality)
        return None if model is None else str(find_bundle(model).path)

    # -- dose check of a synthetic CT -------------------------------------------------------------------

    def doseCheck(self, ctNode, sctNode, targetNode=None, oarNodes=None, **options) -> DoseOutputs:
        """Plan on ``ctNode``, recompute on ``sctNode`` and compare, waiting for the result (the work runs in a
        background process); arguments as :meth:`doseCheckAsync`."""
        return self.doseCheckAsync(ctNode, sctNode, targetNode, oarNodes, **options).wait()

    def doseCheckAsync(
        self,
        ctNode,
        sctNode,
        targetNode=None,
        oarNodes: Mapping[str, object] | None = None,
        *,
        beams: int = 7,
        prescription: float = 60.0,
        doseGrid: float = 3.0,
        targetRadius: float = 20.0,
        progress: Progress | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> DoseRun:
        """Start a dose check (``medtrans dose`` in a background process) and return at once; poll it like a
        translation run.

        Args:
            ctNode: the real CT (HU); every result is on its grid.
            sctNode: the synthetic CT (HU), e.g. a translation's result; resampled onto the CT's grid.
            targetNode: target label map; ``None`` places a spherical test target at the body's centre (a test plan).
            oarNodes: ``{name: label map}`` organs at risk.
            beams, prescription, doseGrid, targetRadius: the plan (see ``medtrans dose --help``).
            progress: called with ``(fraction, message)``.
            cancel: polled while running; True kills the process.

        Raises:
            MedTransError: bad inputs, before anything starts (see :func:`~MedTransSlicerLib.dose.doseRequest`).
        """
        try:
            request = doseRequest(
                ctNode, sctNode, targetNode, dict(oarNodes or {}), beams=beams, prescription=prescription,
                doseGrid=doseGrid, targetRadius=targetRadius, python=self.pythonExecutable,
            )  # fmt: skip
        except MedTransError as error:
            self.errorOccurred.emit(str(error))
            raise
        run = DoseRun(self.scene, request, self.runnerFactory(), cancel=cancel)
        if progress is not None:
            run.progressed.connect(progress)
        run.failed.connect(self.errorOccurred.emit)
        return run

    # -- guard rails before a run (front ends show these; they decide nothing themselves) -----------------

    @staticmethod
    def preflight(
        sourceNode, sourceModality: str, targetModality: str, model=None, referenceNode=None, extraSources=None
    ) -> Preflight:
        """Whether Translate may run with these inputs, which model will run and what to show before it does.

        Cheap (no torch, a strided look at the voxels): call it whenever an input changes. Never raises for a
        user's choice: a bad one is ``result.refusal``. See :func:`MedTransSlicerLib.preflight.preflight`.
        """
        return preflight.preflight(sourceNode, sourceModality, targetModality, model, referenceNode, extraSources)

    @staticmethod
    def checkReference(referenceNode, sourceNode) -> tuple[str, tuple[str, ...]]:
        """``(refusal, warnings)`` of a reference for ``sourceNode``: it must overlap the source; a different field
        of view is a warning (see :func:`MedTransSlicerLib.preflight.referenceCheck`)."""
        return preflight.referenceCheck(referenceNode, sourceNode)

    # -- helpers for front ends --------------------------------------------------------------------------

    @staticmethod
    def availableModels(sourceModality: str | None = None, targetModality: str | None = None) -> list[Bundle]:
        """Installed bundles (shipped, ``$MEDTRANS_MODELS``, ``~/.medtrans/models``), optionally for one pair."""
        bundles = installed_bundles()
        if sourceModality and targetModality:
            bundles = [b for b in bundles if b.supports(sourceModality, targetModality)]
        return bundles

    @staticmethod
    def guessSourceModality(volumeNode) -> str | None:
        """Best guess of a volume's modality key from DICOM tags, its name and its intensities (or ``None``)."""
        return guess.guessModalityOfNode(volumeNode)

    def showResults(self, outputs: TranslationOutputs, sourceNode, referenceNode=None) -> None:
        """Source | synthetic (+ difference overlay) | reference side by side, linked, metrics table below."""
        layout.showComparison(self.scene, sourceNode, outputs, referenceNode)
