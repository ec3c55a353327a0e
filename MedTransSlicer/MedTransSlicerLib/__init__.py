"""MedTrans logic on MRML nodes (no Qt, no dialogs): shared by desktop Slicer, the browser front end and scripts.

Blocking use (scripts, tests)::

    from MedTransSlicerLib import MedTransLogic

    logic = MedTransLogic(scene)  # slicer.mrmlScene in Slicer
    outputs = logic.translate(cbctNode, "CBCT", "CT", referenceNode=planningCtNode, alignReference=True)
    outputs.syntheticNode, outputs.differenceNode, outputs.metricsTableNode, outputs.transformNode

Non-blocking use (GUIs): same arguments, returns a :class:`TranslationRun` at once::

    run = logic.translateAsync(cbctNode, "CBCT", "CT", progress=lambda fraction, message: ...)
    run.finished.connect(lambda outputs: logic.showResults(outputs, cbctNode))
    run.failed.connect(showError)        # message: str
    # every ~100 ms from the GUI thread (QTimer, asyncio task) until it returns True:
    run.poll()
    run.cancel()                         # kills the process tree; the scene is left as it was

``translate`` / ``translateAsync`` take ``(sourceNode, sourceModality, targetModality, model=None,
referenceNode=None, steps=None, seed=0, device="auto", uncertainty=False, progress=None, cancel=None,
alignReference=False, *, extraSources=None)``; modalities are ``MedTransCore.modalities`` keys. Models that take
several co-registered sequences get the others as ``extraSources={"MR_FLAIR": flairNode, ...}`` (the source node
stays the reference grid); ``outputs.limitations`` and ``outputs.statusText()`` say what the model cannot do.
Before a run, ``logic.preflight(sourceNode, sourceModality, targetModality, model=None, referenceNode=None,
extraSources=None)`` says whether Translate may run (``.refusal``), which model will (``.model``, ``.automatic``, its
``.modelDomain``, ``.intendedUse``, ``.limitations``), what the input looks like (``.inputDomain``) and the warnings to
show beside the inputs (``.warnings``); it never raises for a user's choice and is cheap enough to call on every change.
With a reference, ``outputs.baselineMetrics`` scores the source as is and its histogram matched to the reference, and
``outputs.warnings`` says when the model does worse than one of them.
Input errors raise a ``MedTransCore.errors.MedTransError`` (and emit ``logic.errorOccurred(message)``) before
anything starts; a failed run reports through ``run.failed`` and ``logic.errorOccurred`` and adds no node.
"""

from .dependencies import makeCoreImportable

makeCoreImportable()  # a source checkout ("Add module path" in Slicer) is not pip-installed: find its core first

from MedTransCore.errors import MedTransError  # noqa: E402
from MedTransCore.modalities import MODALITIES  # noqa: E402

from .dose import DoseOutputs, DoseRun  # noqa: E402
from .guess import guessModality, guessModalityOfNode  # noqa: E402
from .logic import MedTransLogic  # noqa: E402
from .preflight import Preflight  # noqa: E402
from .process import ProcessRunner, SubprocessRunner  # noqa: E402
from .run import TranslationOutputs, TranslationRun  # noqa: E402
from .signals import Signal  # noqa: E402

# Re-exported for the Qt module file, which must import this package before anything from MedTransCore.
MODALITY_KEYS = list(MODALITIES)

__all__ = [
    "DoseOutputs",
    "DoseRun",
    "MODALITY_KEYS",
    "MedTransError",
    "MedTransLogic",
    "Preflight",
    "TranslationOutputs",
    "TranslationRun",
    "ProcessRunner",
    "SubprocessRunner",
    "Signal",
    "guessModality",
    "guessModalityOfNode",
]
