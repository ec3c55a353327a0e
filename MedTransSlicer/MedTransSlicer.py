"""MedTrans: translate a volume to another modality (synthetic CT from CBCT/MR, missing MR sequences, contrast CT).

This file is the thin Qt layer; all work is in ``MedTransSlicerLib`` (MRML only, shared with the browser front end).
"""

import logging
from dataclasses import dataclass
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLLabelMapVolumeNode, vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MedTransSlicerLib import MODALITY_KEYS, MedTransError, MedTransLogic, dependencies, layout

POLL_INTERVAL_MS = 100
TRANSLATE_TOOLTIP = "Make the synthetic volume (runs in a background process; click again to cancel)"
DOSE_TOOLTIP = "Plan on the CT, recompute on the synthetic CT, compare (gamma, DVH); click again to cancel"
BUSY_TOOLTIP = "Another job is running: wait for it or cancel it"
#: Translation targets whose result a dose check can use as a synthetic CT.
CT_TARGETS = ("CT", "CT_ARTERIAL", "CT_VENOUS")


class MedTransSlicer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedTrans"
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedTrans contributors"]
        self.parent.helpText = (
            "Translate a 3D scan into another modality of the same patient: synthetic CT from CBCT or MR, "
            "missing MR sequences (T1, T1c, T2, FLAIR, PD), contrast-enhanced CT phases. Results are new volumes "
            "marked SYNTHETIC; with a reference scan you also get a difference map and metrics (MAE, PSNR, SSIM...)."
        )
        self.parent.acknowledgementText = "MedTrans builds on MONAI, SimpleITK, PyTorch and 3D Slicer."


@parameterNodeWrapper
class MedTransSlicerParameterNode:
    """GUI state, saved with the scene. ``model`` is "" for the best installed model, else a name or folder.

    The ``dose*`` fields are the dose check's: a plan on the CT recomputed on the synthetic CT (no target: a test plan).
    """

    sourceVolume: vtkMRMLScalarVolumeNode
    sourceModality: Annotated[str, Choice(MODALITY_KEYS), Default("CBCT")]
    targetModality: Annotated[str, Choice(MODALITY_KEYS), Default("CT")]
    model: str
    steps: Annotated[int, WithinRange(0, 1000), Default(0)]
    device: Annotated[str, Choice(["auto", "cpu", "cuda"]), Default("auto")]
    referenceVolume: vtkMRMLScalarVolumeNode
    alignReference: bool
    uncertainty: bool
    seed: Annotated[int, WithinRange(0, 2**31 - 1), Default(0)]
    doseCtVolume: vtkMRMLScalarVolumeNode
    doseSyntheticVolume: vtkMRMLScalarVolumeNode
    doseTargetVolume: vtkMRMLLabelMapVolumeNode
    doseBeams: Annotated[int, WithinRange(1, 36), Default(7)]
    dosePrescription: Annotated[float, WithinRange(1.0, 100.0), Default(60.0)]
    doseGrid: Annotated[float, WithinRange(1.0, 10.0), Default(3.0)]


class MedTransSlicerLogic(ScriptedLoadableModuleLogic):
    """Holds the module's parameter node only; the work is done by ``MedTransSlicerLib.MedTransLogic``."""

    def getParameterNode(self):
        return MedTransSlicerParameterNode(super().getParameterNode())


@dataclass
class ExtraSourceRow:
    """One "additional source" row of the panel: its widget, modality list and volume selector."""

    widget: object
    modalityComboBox: object
    volumeSelector: object

    def value(self):
        return self.modalityComboBox.currentText, self.volumeSelector.currentNode()


class MedTransSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Binds the .ui to the parameter node and drives ``MedTransLogic.translateAsync`` and ``doseCheckAsync`` with
    a QTimer (one run at a time: ``self.run``, started by ``self.runKind``, "translate" or "dose")."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.run = None
        self.runKind = None
        self._parameterNode = None
        self._connectionTag = None
        self.extraSourceRows: list[ExtraSourceRow] = []
        self._preflightKey = None
        self._preflight = None
        self._showsRefusal = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedTransSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.progressBar.hide()

        self.logic = MedTransLogic(slicer.mrmlScene)
        self.timer = qt.QTimer()
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.onPoll)

        self.ui.translateButton.clicked.connect(self.onTranslateButton)
        self.ui.doseButton.clicked.connect(self.onDoseButton)
        self.ui.browseModelButton.clicked.connect(self.onBrowseModel)
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChanged)
        self.ui.sourceSelector.currentNodeChanged.connect(self.onSourceChanged)
        self.ui.addExtraSourceButton.clicked.connect(lambda: self.addExtraSourceRow())
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        if self.run is not None:
            self.run.cancel()
        self.timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)  # the GUI follows the parameter node again on enter()

    def onSceneStartClose(self, caller, event):
        if self.run is not None:
            self.run.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        for row in list(self.extraSourceRows):
            self.removeExtraSourceRow(row)
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ----------------------------------------------------------------------------------

    def initializeParameterNode(self):
        self.setParameterNode(MedTransSlicerLogic().getParameterNode())
        if not self._parameterNode.sourceVolume:
            self._parameterNode.sourceVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode is not None:
            self._parameterNode.disconnectGui(self._connectionTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = parameterNode
        if self._parameterNode is not None:
            self._connectionTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self.updateGUI()

    def updateGUI(self, caller=None, event=None):
        """Model list, the logic's preflight (model, input check, refusal) and button states.

        The logic decides whether Translate may run and which model will; this only shows its answer. While a run
        is going, only the button that started it is enabled, as "Cancel".
        """
        p = self._parameterNode
        if p is None:
            return
        self._fillModels(p.sourceModality, p.targetModality, p.model)
        running = self.run is not None
        self.ui.alignReferenceCheckBox.enabled = p.referenceVolume is not None and not running
        self.ui.extraSourcesWidget.enabled = not running
        self.ui.translateButton.text = "Cancel" if self.runKind == "translate" else "Translate"
        self.ui.doseButton.text = "Cancel" if self.runKind == "dose" else "Compute dose"
        if running:
            for kind, button, tooltip in (
                ("translate", self.ui.translateButton, TRANSLATE_TOOLTIP),
                ("dose", self.ui.doseButton, DOSE_TOOLTIP),
            ):
                button.enabled = self.runKind == kind
                button.toolTip = tooltip if self.runKind == kind else BUSY_TOOLTIP
            return
        doseRefusal = self.doseRefusal()
        self.ui.doseButton.enabled = not doseRefusal
        self.ui.doseButton.toolTip = doseRefusal or DOSE_TOOLTIP
        check = self.currentPreflight()
        self.ui.translateButton.enabled = check.ok
        self.ui.translateButton.toolTip = check.refusal or TRANSLATE_TOOLTIP
        self.ui.modelInfoLabel.text = check.modelSummary()
        self.ui.inputCheckLabel.text = check.inputSummary()
        if not check.ok:
            self.ui.statusLabel.text = "Cannot translate: " + check.refusal
        elif self._showsRefusal:
            self.ui.statusLabel.text = ""
        self._showsRefusal = not check.ok

    def doseRefusal(self) -> str:
        """Why Compute dose cannot run with the panel's choices ("" when it can); the logic checks the rest."""
        p = self._parameterNode
        ct, sct = p.doseCtVolume, p.doseSyntheticVolume
        if ct is None or sct is None:
            return "Choose the planning CT and the synthetic CT"
        if ct.GetID() == sct.GetID():
            return "The synthetic CT is the planning CT itself: choose the translation's result"
        return ""

    def currentPreflight(self, fresh=False):
        """``logic.preflight`` of the panel's inputs, asked again only when one of them changed (or ``fresh``)."""
        p = self._parameterNode
        extras = [row.value() for row in self.extraSourceRows]

        def stamp(node):
            if node is None:
                return None
            image = node.GetImageData()
            return node.GetID(), node.GetMTime(), image.GetMTime() if image is not None else 0

        key = (
            stamp(p.sourceVolume), p.sourceModality, p.targetModality, p.model, stamp(p.referenceVolume),
            tuple((modality, stamp(node)) for modality, node in extras),
        )  # fmt: skip
        if fresh or key != self._preflightKey or self._preflight is None:
            self._preflight = self.logic.preflight(
                p.sourceVolume, p.sourceModality, p.targetModality, p.model or None, p.referenceVolume, extras
            )
            self._preflightKey = key
        return self._preflight

    def _fillModels(self, source, target, current) -> bool:
        """Fill the model list for the pair; False when no installed model lists it."""
        available = self.logic.availableModels(source, target)
        entries = [("best installed model", "")] + [(b.name, b.name) for b in available]
        if current and current not in [data for _, data in entries]:
            entries.append((current, current))  # a folder picked with Browse
        wasBlocked = self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for text, data in entries:
            self.ui.modelComboBox.addItem(text, data)
        self.ui.modelComboBox.setCurrentIndex(max(self.ui.modelComboBox.findData(current), 0))
        self.ui.modelComboBox.blockSignals(wasBlocked)
        return bool(available or current)

    def onModelChanged(self, index):
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index) or ""

    def onBrowseModel(self):
        folder = qt.QFileDialog.getExistingDirectory(self.parent, "Model bundle folder (with metadata.json)")
        if folder:
            self._parameterNode.model = folder

    def onSourceChanged(self, node):
        guess = self.logic.guessSourceModality(node) if node is not None else None
        if guess is not None and self._parameterNode is not None:
            self._parameterNode.sourceModality = guess

    # -- additional sources (rows of modality + volume; the logic checks them when Translate is pressed) ----

    def addExtraSourceRow(self, modality=None, node=None) -> ExtraSourceRow:
        p = self._parameterNode
        taken = {p.sourceModality, p.targetModality} if p is not None else set()
        taken |= {r.modalityComboBox.currentText for r in self.extraSourceRows}
        widget = qt.QWidget()
        rowLayout = qt.QHBoxLayout(widget)
        rowLayout.setContentsMargins(0, 0, 0, 0)
        modalityComboBox = qt.QComboBox()
        modalityComboBox.addItems(MODALITY_KEYS)
        modalityComboBox.currentText = modality or next((k for k in MODALITY_KEYS if k not in taken), MODALITY_KEYS[0])
        modalityComboBox.toolTip = "What this additional volume is"
        volumeSelector = slicer.qMRMLNodeComboBox()
        volumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        volumeSelector.hideChildNodeTypes = ["vtkMRMLLabelMapVolumeNode"]
        volumeSelector.showChildNodeTypes = False
        volumeSelector.addEnabled = volumeSelector.removeEnabled = False
        volumeSelector.noneEnabled = True
        volumeSelector.setMRMLScene(slicer.mrmlScene)
        volumeSelector.setCurrentNode(node)
        volumeSelector.toolTip = "A volume of the same patient, co-registered with the source volume"
        removeButton = qt.QToolButton()
        removeButton.text = "Remove"
        removeButton.toolTip = "Remove this additional source"
        rowLayout.addWidget(modalityComboBox)
        rowLayout.addWidget(volumeSelector, 1)
        rowLayout.addWidget(removeButton)
        row = ExtraSourceRow(widget, modalityComboBox, volumeSelector)
        volumeSelector.currentNodeChanged.connect(lambda node, row=row: self.onExtraSourceChanged(row, node))
        modalityComboBox.currentIndexChanged.connect(lambda index: self.updateGUI())
        removeButton.clicked.connect(lambda checked=False, row=row: self.removeExtraSourceRow(row))
        rows = self.ui.extraSourcesWidget.layout()
        rows.insertWidget(rows.count() - 1, widget)  # above the "Add source" button
        self.extraSourceRows.append(row)
        self.updateGUI()
        return row

    def removeExtraSourceRow(self, row: ExtraSourceRow) -> None:
        if row in self.extraSourceRows:
            self.extraSourceRows.remove(row)
            row.widget.setParent(None)
            row.widget.deleteLater()
            self.updateGUI()

    def onExtraSourceChanged(self, row: ExtraSourceRow, node) -> None:
        guess = self.logic.guessSourceModality(node) if node is not None else None
        if guess is not None:
            row.modalityComboBox.currentText = guess
        self.updateGUI()

    # -- running -----------------------------------------------------------------------------------------

    def onTranslateButton(self):
        if self.run is not None:
            self.run.cancel()
            return
        if not self._ensureDependencies():
            return
        p = self._parameterNode
        check = self.currentPreflight(fresh=True)  # with the dependencies in, the input's domain is checked too
        if not check.ok:
            self.updateGUI()
            return
        try:
            self.run = self.logic.translateAsync(
                p.sourceVolume, p.sourceModality, p.targetModality, model=p.model or None,
                referenceNode=p.referenceVolume, steps=p.steps or None, seed=p.seed, device=p.device,
                uncertainty=p.uncertainty, progress=self.onProgress, alignReference=p.alignReference,
                extraSources=[row.value() for row in self.extraSourceRows],
            )  # fmt: skip
        except MedTransError as error:
            slicer.util.errorDisplay(str(error), windowTitle="MedTrans")
            return
        source, reference = p.sourceVolume, p.referenceVolume
        self.run.finished.connect(lambda outputs: self.onFinished(outputs, source, reference))
        self.run.failed.connect(self.onFailed)
        self.run.cancelled.connect(lambda: self.ui.statusLabel.setText("Cancelled; nothing was added."))
        self._startPolling("translate")

    def onDoseButton(self):
        if self.run is not None:
            self.run.cancel()
            return
        if not self._ensureDependencies():
            return
        p = self._parameterNode
        try:
            self.run = self.logic.doseCheckAsync(
                p.doseCtVolume, p.doseSyntheticVolume, p.doseTargetVolume, beams=p.doseBeams,
                prescription=p.dosePrescription, doseGrid=p.doseGrid, progress=self.onProgress,
            )  # fmt: skip
        except MedTransError as error:
            slicer.util.errorDisplay(str(error), windowTitle="MedTrans")
            return
        ct = p.doseCtVolume
        self.run.finished.connect(lambda outputs: self.onDoseFinished(outputs, ct))
        self.run.failed.connect(self.onDoseFailed)
        self.run.cancelled.connect(self.onDoseCancelled)
        self.ui.doseStatusLabel.text = ""
        self._startPolling("dose")

    def _startPolling(self, kind: str) -> None:
        """Show the progress bar and poll ``self.run`` (started by the ``kind`` button) from the timer."""
        self.runKind = kind
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self.timer.start()
        self.updateGUI()

    def _ensureDependencies(self) -> bool:
        plan = dependencies.installPlan()
        if plan.empty:
            return True
        if not slicer.util.confirmOkCancelDisplay(plan.describe(), windowTitle="MedTrans: install dependencies"):
            return False
        self.ui.statusLabel.text = "Installing Python packages (see the status bar)..."
        try:
            with slicer.util.tryWithErrorDisplay("Installing MedTrans's dependencies failed.", waitCursor=True):
                dependencies.install(plan)
        except Exception:  # already shown to the user by tryWithErrorDisplay
            self.ui.statusLabel.text = "Dependencies were not installed."
            return False
        return True

    def onPoll(self):
        if self.run is not None and self.run.poll():
            self.timer.stop()
            self.run = None
            self.runKind = None
            self.ui.progressBar.hide()
            self.updateGUI()

    def onProgress(self, fraction, message):
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        if self.runKind == "dose":
            self.ui.doseStatusLabel.text = message

    def onFinished(self, outputs, sourceNode, referenceNode):
        self.logic.showResults(outputs, sourceNode, referenceNode)
        layout.resetViewsInApplication()
        self.ui.statusLabel.text = outputs.statusText()  # includes the model's limitations and the warnings
        if referenceNode is not None and outputs.settings.get("target_modality") in CT_TARGETS:
            self._prefillDoseCheck(referenceNode, outputs.syntheticNode)

    def _prefillDoseCheck(self, ctNode, syntheticNode) -> None:
        """Offer a synthetic CT and its reference to the dose check, leaving the volumes already chosen there."""
        p = self._parameterNode
        if p is None:  # the module was left while the translation ran
            p = MedTransSlicerLogic().getParameterNode()
        if p.doseCtVolume is None:
            p.doseCtVolume = ctNode
        if p.doseSyntheticVolume is None:
            p.doseSyntheticVolume = syntheticNode

    def onDoseFinished(self, outputs, ctNode):
        slicer.util.setSliceViewerLayers(background=ctNode, foreground=outputs.sctDoseNode, foregroundOpacity=0.5)
        try:
            slicer.modules.plots.logic().ShowChartInLayout(outputs.dvhChartNode)
        except AttributeError:  # no Plots module (a custom application): the chart node is in the scene anyway
            logging.info("MedTrans: the Plots module is not available; the DVH chart is not shown")
        self.ui.doseStatusLabel.text = outputs.statusText()  # the pass rates, and whether it is a test plan
        self.ui.statusLabel.text = "Dose check done (see the Dose check section)."

    def onDoseFailed(self, message):
        self.ui.doseStatusLabel.text = "Failed: " + message
        self.onFailed(message)

    def onDoseCancelled(self):
        self.ui.doseStatusLabel.text = "Cancelled; nothing was added."
        self.ui.statusLabel.text = "Dose check cancelled."

    def onFailed(self, message):
        self.ui.statusLabel.text = "Failed: " + message
        logging.error("MedTrans: %s", message)
        slicer.util.errorDisplay(message, windowTitle="MedTrans")


class MedTransSlicerTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: an identity CBCT -> CT translation keeps voxels and geometry, and CT -> CT is refused
    (the pytest suite in Testing/Slicer covers the logic in depth through the slicer-core wheel)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_an_identity_translation_keeps_the_source()
        self.setUp()
        self.test_a_translation_into_the_source_modality_is_refused()

    def _volume(self, name):
        import numpy as np

        array = np.full((12, 14, 16), -1000.0, dtype=np.float32)
        array[3:9, 4:10, 5:11] = 40.0
        return array, slicer.util.addVolumeFromArray(array, ijkToRAS=np.diag([0.8, 1.0, 2.5, 1.0]), name=name)

    def test_an_identity_translation_keeps_the_source(self):
        import numpy as np

        array, source = self._volume("phantom CBCT")
        _, reference = self._volume("planning CT")
        outputs = MedTransLogic(slicer.mrmlScene).translate(
            source, "CBCT", "CT", model="identity", referenceNode=reference
        )
        synthetic = slicer.util.arrayFromVolume(outputs.syntheticNode)
        self.assertTrue(np.allclose(synthetic, array, atol=1e-3))
        self.assertEqual(outputs.syntheticNode.GetAttribute("MedTrans.Synthetic"), "true")
        self.assertAlmostEqual(outputs.metrics["MAE"], 0.0, places=3)
        self.assertEqual(set(outputs.baselineMetrics), {"source as is", "histogram matching"})
        self.delayDisplay("MedTrans identity translation passed")

    def test_a_translation_into_the_source_modality_is_refused(self):
        _, source = self._volume("CT")
        logic = MedTransLogic(slicer.mrmlScene)
        self.assertIn("already CT", logic.preflight(source, "CT", "CT", model="identity").refusal)
        with self.assertRaises(MedTransError):
            logic.translate(source, "CT", "CT", model="identity")
        self.delayDisplay("MedTrans refuses CT -> CT")
