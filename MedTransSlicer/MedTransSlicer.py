"""MedTrans: translate a volume to another modality (synthetic CT from CBCT/MR, missing MR sequences, contrast CT).

This file is the thin Qt layer; all work is in ``MedTransSlicerLib`` (MRML only, shared with the browser front end).
"""

import logging
from dataclasses import dataclass
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
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
    """GUI state, saved with the scene. ``model`` is "" for the best installed model, else a name or folder."""

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
    """Binds the .ui to the parameter node and drives ``MedTransLogic.translateAsync`` with a QTimer."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.run = None
        self._parameterNode = None
        self._connectionTag = None
        self.extraSourceRows: list[ExtraSourceRow] = []

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
        """Model list for the chosen pair and button states (the bound widgets update themselves)."""
        p = self._parameterNode
        if p is None:
            return
        hasModel = self._fillModels(p.sourceModality, p.targetModality, p.model)
        running = self.run is not None
        self.ui.alignReferenceCheckBox.enabled = p.referenceVolume is not None and not running
        self.ui.extraSourcesWidget.enabled = not running
        self.ui.translateButton.enabled = running or (p.sourceVolume is not None and hasModel)
        self.ui.translateButton.text = "Cancel" if running else "Translate"
        if not hasModel and not running:
            self.ui.statusLabel.text = f"No installed model translates {p.sourceModality} to {p.targetModality}."

    def _fillModels(self, source, target, current) -> bool:
        """Fill the model list for the pair; False when no model can run it."""
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
        removeButton.clicked.connect(lambda checked=False, row=row: self.removeExtraSourceRow(row))
        rows = self.ui.extraSourcesWidget.layout()
        rows.insertWidget(rows.count() - 1, widget)  # above the "Add source" button
        self.extraSourceRows.append(row)
        return row

    def removeExtraSourceRow(self, row: ExtraSourceRow) -> None:
        if row in self.extraSourceRows:
            self.extraSourceRows.remove(row)
            row.widget.setParent(None)
            row.widget.deleteLater()

    def onExtraSourceChanged(self, row: ExtraSourceRow, node) -> None:
        guess = self.logic.guessSourceModality(node) if node is not None else None
        if guess is not None:
            row.modalityComboBox.currentText = guess

    # -- running -----------------------------------------------------------------------------------------

    def onTranslateButton(self):
        if self.run is not None:
            self.run.cancel()
            return
        if not self._ensureDependencies():
            return
        p = self._parameterNode
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
            self.ui.progressBar.hide()
            self.updateGUI()

    def onProgress(self, fraction, message):
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message

    def onFinished(self, outputs, sourceNode, referenceNode):
        self.logic.showResults(outputs, sourceNode, referenceNode)
        layout.resetViewsInApplication()
        self.ui.statusLabel.text = outputs.statusText()  # includes the model's limitations and the warnings

    def onFailed(self, message):
        self.ui.statusLabel.text = "Failed: " + message
        logging.error("MedTrans: %s", message)
        slicer.util.errorDisplay(message, windowTitle="MedTrans")


class MedTransSlicerTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: an identity CT -> CT translation keeps voxels and geometry (the pytest suite in
    Testing/Slicer covers the logic in depth through the slicer-core wheel)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_an_identity_translation_keeps_the_source()

    def test_an_identity_translation_keeps_the_source(self):
        import numpy as np

        array = np.full((12, 14, 16), -1000.0, dtype=np.float32)
        array[3:9, 4:10, 5:11] = 40.0
        source = slicer.util.addVolumeFromArray(array, ijkToRAS=np.diag([0.8, 1.0, 2.5, 1.0]), name="phantom")
        outputs = MedTransLogic(slicer.mrmlScene).translate(source, "CT", "CT", model="identity", referenceNode=source)
        synthetic = slicer.util.arrayFromVolume(outputs.syntheticNode)
        self.assertTrue(np.allclose(synthetic, array, atol=1e-3))
        self.assertEqual(outputs.syntheticNode.GetAttribute("MedTrans.Synthetic"), "true")
        self.assertAlmostEqual(outputs.metrics["MAE"], 0.0, places=3)
        self.delayDisplay("MedTrans identity translation passed")
