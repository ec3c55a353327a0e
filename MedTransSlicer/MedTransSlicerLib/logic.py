"""``MedTransLogic``: translate an MRML volume node with the core, on any MRML scene (no Qt, no dialogs)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import slicer

from MedTransCore.bundles import Bundle, installed_bundles, select_bundle
from MedTransCore.errors import InputError, MedTransError
from MedTransCore.modalities import get_modality

from . import guess, layout, volumes
from .process import ProcessRunner, SubprocessRunner, childEnvironment, defaultPythonExecutable, translateCommand
from .run import RunRequest, TranslationOutputs, TranslationRun
from .signals import Signal

Progress = Callable[[float, str], None]
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
    ) -> TranslationOutputs:
        """Translate ``sourceNode`` and wait for the result (the work still runs in a background process).

        Args:
            sourceNode: scalar volume node to translate (never modified).
            sourceModality: registry key of the source, e.g. ``"CBCT"``.
            targetModality: registry key of the target, e.g. ``"CT"``.
            model: bundle name or folder; ``None`` picks the best installed model for the pair.
            referenceNode: optional real volume of the target modality: adds a difference map and metrics.
            steps: sampler steps for diffusion models (``None``: the model's default).
            seed: random seed (same seed, same result).
            device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``"gpu"`` is accepted for ``"cuda"``).
            uncertainty: also compute the voxel-wise standard deviation over samples (stochastic models).
            progress: called with ``(fraction in [0, 1], message)``.
            cancel: polled while waiting; returning True kills the process and raises ``CancelledError``.
            alignReference: rigidly register the reference onto the synthetic volume first (a reference
                acquired on another day); keeps the transform as a node.

        Returns:
            The added nodes (see :class:`TranslationOutputs`).

        Raises:
            MedTransError: bad input, unsupported pair, failed run (nothing is added to the scene);
                ``CancelledError`` when cancelled.
        """
        run = self.translateAsync(
            sourceNode, sourceModality, targetModality, model, referenceNode, steps, seed, device, uncertainty,
            progress, cancel, alignReference=alignReference,
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
    ) -> TranslationRun:
        """Start a translation and return at once; arguments as :meth:`translate`.

        The caller polls ``run.poll()`` from its GUI thread (e.g. every 100 ms) until it returns True, and may
        call ``run.cancel()`` at any time. Input errors raise here, before anything starts.
        """
        try:
            request = self._request(
                sourceNode, sourceModality, targetModality, model, referenceNode, steps, seed, device,
                uncertainty, alignReference,
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
        alignReference,
    ) -> RunRequest:  # fmt: skip
        """Check every input and read what the run needs from the scene (raises ``InputError``)."""
        volumes.checkScalarVolume(sourceNode, "source")
        if referenceNode is not None:
            volumes.checkScalarVolume(referenceNode, "reference")
        elif alignReference:
            raise InputError("aligning the reference needs a reference volume")
        get_modality(sourceModality), get_modality(targetModality)
        if str(device).lower() not in DEVICES:
            raise InputError(f"unknown device {device!r}; choose auto, cpu or cuda")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise InputError(f"steps must be a positive whole number, got {steps!r}")
        modelPath = self._checkModel(sourceModality, targetModality, model)

        matrix = volumes.ijkToRas(sourceNode)
        sourceImage = volumes.imageFromVolume(sourceNode, matrix)
        referenceImage = None
        if referenceNode is not None:
            referenceImage = volumes.imageFromVolume(
                referenceNode, volumes.ijkToRasInFrameOf(referenceNode, sourceNode)
            )

        def command(folder: Path) -> list[str]:
            return translateCommand(
                self.pythonExecutable, folder / "source.nrrd", folder / "synthetic.nrrd", sourceModality,
                targetModality, model=modelPath, steps=steps, seed=int(seed),
                device=DEVICES[str(device).lower()], uncertaintyPath=folder / "uncertainty.nrrd" if uncertainty else None,
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
        )

    @staticmethod
    def _checkModel(sourceModality: str, targetModality: str, model: str | Path | None) -> str:
        """The folder of the named (or best installed) bundle for the pair; cheap: no torch in the GUI process."""
        return str(select_bundle(sourceModality, targetModality, model).path)

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
