"""The dose check of a synthetic CT in MRML: ``medtrans dose`` in a background process, its results as nodes.

The nodes follow SlicerRT's conventions where they overlap: dose volumes carry ``DicomRtImport.DoseVolume`` and
``DoseUnitName``/``DoseUnitValue`` (SlicerRT's dose modules accept them), the DVH is a table of cumulative curves
with a plot chart, and the gamma index is a scalar volume.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from vtk import vtkDoubleArray, vtkStringArray

from MedTransCore.errors import InputError, MedTransError

from . import results, volumes
from .background import BackgroundRun
from .process import ProcessRunner, childEnvironment
from .volumes import addVolumeNode, ijkToRasFromImage

CT_FILE, SCT_FILE, TARGET_FILE = "ct.nrrd", "sct.nrrd", "target.nrrd"
#: The part of the progress bar the dose process fills; the rest is reading its results and making nodes.
PROCESS_SHARE = 0.95
DOSE_COLOR_NAME = "MedTrans dose"
DVH_BINS = 200
#: Gamma volume value of the voxels gamma does not evaluate (dose below the low-dose threshold): gamma is >= 0.
NOT_EVALUATED = -1.0


def oarFile(index: int) -> str:
    return f"oar-{index}.nrrd"


@dataclass
class DoseRequest:
    """What a dose check needs, read from the scene: images in the CT volume's frame and the command options."""

    ctName: str
    ctMatrix: np.ndarray
    parentTransformID: str | None
    ctImage: sitk.Image
    sctImage: sitk.Image
    targetImage: sitk.Image | None
    oarImages: dict[str, sitk.Image]
    options: dict[str, float]
    python: str
    environment: dict[str, str]

    def command(self, folder: Path) -> list[str]:
        """The ``python -m MedTransCore dose`` command line writing into ``folder / "out"``."""
        args = [self.python, "-m", "MedTransCore", "dose", "--ct", str(folder / CT_FILE)]
        args += ["--sct", str(folder / SCT_FILE), "--out", str(folder / "out"), "--progress-format", "lines"]
        if self.targetImage is not None:
            args += ["--target", str(folder / TARGET_FILE)]
        for index, name in enumerate(self.oarImages):
            args += ["--oar", f"{name}={folder / oarFile(index)}"]
        for option, value in self.options.items():
            args += [f"--{option}", f"{value:g}"]
        return args


def doseRequest(
    ctNode,
    sctNode,
    targetNode=None,
    oarNodes: dict[str, object] | None = None,
    *,
    beams: int = 7,
    prescription: float = 60.0,
    doseGrid: float = 3.0,
    targetRadius: float = 20.0,
    python: str,
) -> DoseRequest:
    """Check the inputs of a dose check and read them from the scene, in the CT volume's frame.

    Raises:
        InputError: a missing or non-image CT or sCT, the sCT being the CT, a mask that is not a volume, or plan
            settings no plan can use.
    """
    from MedTransCore.dose.engine import PlanSettings  # validates the options (needs the installed dependencies)

    volumes.checkScalarVolume(ctNode, "CT")
    volumes.checkScalarVolume(sctNode, "synthetic CT")
    if sctNode is ctNode:
        raise InputError("the synthetic CT is the CT itself; choose the translation's result")
    PlanSettings(beams=int(beams), prescription_gy=prescription, dose_grid_mm=doseGrid, target_radius_mm=targetRadius)
    masks = {"target": targetNode, **{f"organ {name}": node for name, node in (oarNodes or {}).items()}}
    for role, node in masks.items():
        if node is not None and not node.IsA("vtkMRMLScalarVolumeNode"):
            raise InputError(f"the {role} must be a label map or scalar volume, got {node.GetClassName()}")
    matrix = volumes.ijkToRas(ctNode)

    def inCtFrame(node):
        return volumes.imageFromVolume(node, volumes.ijkToRasInFrameOf(node, ctNode))

    return DoseRequest(
        ctName=ctNode.GetName(),
        ctMatrix=matrix,
        parentTransformID=ctNode.GetTransformNodeID(),
        ctImage=volumes.imageFromVolume(ctNode, matrix),
        sctImage=inCtFrame(sctNode),
        targetImage=inCtFrame(targetNode) if targetNode is not None else None,
        oarImages={name: inCtFrame(node) for name, node in (oarNodes or {}).items()},
        options={
            "beams": int(beams),
            "prescription": prescription,
            "dose-grid": doseGrid,
            "target-radius": targetRadius,
        },
        python=python,
        environment=childEnvironment(),
    )


@dataclass
class DoseOutputs:
    """The nodes a dose check added.

    Attributes:
        ctDoseNode, sctDoseNode: dose (Gy) of the plan on the CT, and of its fluence on the synthetic CT.
        differenceNode: sCT dose minus CT dose (Gy), with the diverging colour table.
        gammaNode: 2%/2mm gamma index; :data:`NOT_EVALUATED` (-1) below the 10 % low-dose threshold.
        structuresNode: label map of the planning structures (target, organs at risk, body).
        passRateTableNode: ``Criterion``, ``Pass rate (%)``.
        dvhMetricsTableNode: ``Structure``, ``Metric``, ``CT (Gy)``, ``sCT (Gy)``, ``Difference (Gy)``.
        dvhTableNode, dvhChartNode: cumulative DVH curves (dose, then CT and sCT volume % per structure) and their
            plot chart.
        summary: ``dose.json`` (pass rates, DVH metrics, the plan, timings).
    """

    ctDoseNode: object
    sctDoseNode: object
    differenceNode: object
    gammaNode: object
    structuresNode: object
    passRateTableNode: object
    dvhMetricsTableNode: object
    dvhTableNode: object
    dvhChartNode: object
    summary: dict = field(default_factory=dict)

    def statusText(self) -> str:
        rates = ", ".join(f"{k} {v:.1f} %" for k, v in self.summary["gamma_pass_rate"].items())
        text = f"Gamma pass rate (global, 10 % threshold): {rates}."
        if self.summary["plan"]["test_plan"]:
            text += " TEST PLAN: a spherical target placed by MedTrans, not a clinical plan."
        return text


@dataclass
class _Read:
    arrays: dict[str, np.ndarray]
    gamma: sitk.Image
    curves: dict[str, np.ndarray]


class DoseRun(BackgroundRun):
    """A cancellable dose check; create it with ``MedTransLogic.doseCheckAsync`` (see :class:`BackgroundRun`).

    ``finished`` carries the :class:`DoseOutputs`.
    """

    what = "dose check"
    stageExport = "writing the CT and the synthetic CT"
    stageStart = "starting the dose process"

    def __init__(
        self, scene, request: DoseRequest, runner: ProcessRunner, cancel: Callable[[], bool] | None = None
    ) -> None:
        self.request = request  # before the export thread starts
        super().__init__(scene, runner, cancel, PROCESS_SHARE)

    def _export(self) -> None:
        request = self.request
        sitk.WriteImage(request.ctImage, str(self._folder / CT_FILE))
        sitk.WriteImage(request.sctImage, str(self._folder / SCT_FILE))
        if request.targetImage is not None:
            sitk.WriteImage(request.targetImage, str(self._folder / TARGET_FILE))
        for index, image in enumerate(request.oarImages.values()):
            sitk.WriteImage(image, str(self._folder / oarFile(index)))

    def _command(self) -> tuple[list[str], dict[str, str]]:
        return self.request.command(self._folder), self.request.environment

    def _compute(self) -> _Read:
        from MedTransCore.dose.dvh import dvh_curve

        files = self._payload["files"]
        arrays = {}
        for key in ("ct_dose", "sct_dose", "difference", "structures"):
            image = sitk.ReadImage(files[key])
            if image.GetSize() != self.request.ctImage.GetSize():
                raise MedTransError(f"the dose process wrote {key} on another grid than the CT's")
            arrays[key] = sitk.GetArrayFromImage(image)
        top = float(max(arrays["ct_dose"].max(), arrays["sct_dose"].max(), 1e-6))
        bins = np.linspace(0.0, 1.02 * top, DVH_BINS)
        curves = {"Dose (Gy)": bins}
        for name, label in self._payload["structure_labels"].items():
            inside = arrays["structures"] == label
            if not inside.any():  # a structure hidden under the ones before it in the label map
                continue
            for key, title in (("ct_dose", "CT"), ("sct_dose", "sCT")):
                curves[f"{name} {title} (%)"] = dvh_curve(arrays[key], inside, bins)[1]
        return _Read(arrays, sitk.ReadImage(files["gamma"], sitk.sitkFloat32), curves)

    def _createNodes(self, read: _Read) -> DoseOutputs:
        """Add the result nodes; on any failure remove the ones already added and re-raise."""
        request, scene, summary = self.request, self.scene, self._payload
        created = []

        def volume(array: np.ndarray, what: str, matrix: np.ndarray | None = None, synthetic: bool = True):
            node = addVolumeNode(
                scene, array, request.ctMatrix if matrix is None else matrix, f"{request.ctName} {what}",
                request.parentTransformID,
            )  # fmt: skip
            created.append(node)
            _mark(node, what, summary, synthetic)
            return node

        def table(name: str, columns: dict[str, list]):
            node = _addTable(scene, f"{request.ctName} {name}", columns)
            created.append(node)
            _mark(node, name, summary, synthetic=False)
            return node

        hadColors = (_findDoseColorNode(scene), results.findDivergingColorNode(scene))
        try:
            colors, diverging = _doseColorNode(scene), results.divergingColorNode(scene)
            created += [node for node, had in zip((colors, diverging), hadColors) if had is None]
            top = float(read.arrays["ct_dose"].max())
            doses = []
            for key, what, synthetic in (("ct_dose", "dose (CT)", False), ("sct_dose", "dose (SYNTHETIC CT)", True)):
                node = volume(read.arrays[key].astype(np.float32), what, synthetic=synthetic)
                _markDose(node)
                results.setWindowLevel(node, top / 2, top, colors.GetID())
                doses.append(node)
            difference = volume(read.arrays["difference"].astype(np.float32), "dose difference (sCT - CT)")
            span = max(0.05 * top, 1e-3)
            results.setWindowLevel(difference, 0.0, 2 * span, diverging.GetID())
            gamma = sitk.GetArrayFromImage(read.gamma)
            gammaNode = volume(np.nan_to_num(gamma, nan=NOT_EVALUATED), "gamma 2%/2mm", ijkToRasFromImage(read.gamma))
            results.setWindowLevel(gammaNode, 1.0, 2.0)
            structures = volume(read.arrays["structures"].astype(np.uint8), "dose structures", synthetic=False)
            rates = summary["gamma_pass_rate"]
            passRates = table("gamma pass rates", {"Criterion": list(rates), "Pass rate (%)": list(rates.values())})
            rows = [(s, m, v) for s, metrics in summary["dvh"].items() for m, v in metrics.items()]
            dvhMetrics = table(
                "DVH metrics",
                {
                    "Structure": [s for s, _, _ in rows],
                    "Metric": [m for _, m, _ in rows],
                    "CT (Gy)": [v["ct"] for _, _, v in rows],
                    "sCT (Gy)": [v["sct"] for _, _, v in rows],
                    "Difference (Gy)": [v["difference"] for _, _, v in rows],
                },
            )
            dvhTable = table("DVH", {k: list(v) for k, v in read.curves.items()})
            chart = _addDvhChart(scene, dvhTable, f"{request.ctName} DVH", created)
        except Exception:
            for node in reversed(created):
                scene.RemoveNode(node)
            raise
        return DoseOutputs(
            doses[0], doses[1], difference, gammaNode, structures, passRates, dvhMetrics, dvhTable, chart, summary
        )


def _mark(node, what: str, summary: dict, synthetic: bool) -> None:
    """MedTrans attributes: the role, whether the node derives from the synthetic CT, and the plan."""
    node.SetAttribute(results.SYNTHETIC_ATTRIBUTE, "true" if synthetic else "false")
    node.SetAttribute(results.ROLE_ATTRIBUTE, "dose: " + what)
    node.SetAttribute(results.ATTRIBUTE_PREFIX + "DosePlan", json.dumps(summary.get("plan", {}), sort_keys=True))
    if synthetic and hasattr(node, "SetDescription"):
        node.SetDescription(f"{what}: computed by MedTrans on a SYNTHETIC CT; not a dose on an acquired image.")


def _markDose(node) -> None:
    """What SlicerRT's dose modules look for on a dose volume."""
    node.SetAttribute("DicomRtImport.DoseVolume", "1")
    node.SetAttribute("DoseUnitName", "Gy")
    node.SetAttribute("DoseUnitValue", "1.0")


def _findDoseColorNode(scene):
    return results.findColorNodeByRole(scene, "dose")


def _doseColorNode(scene):
    """The scene's dose colour wash (transparent below 10 % of the window, then blue -> red), made once."""
    existing = _findDoseColorNode(scene)
    if existing is not None:
        return existing
    node = scene.CreateNodeByClass("vtkMRMLColorTableNode")
    node.SetName(DOSE_COLOR_NAME)
    node.SetTypeToUser()
    count = 256
    node.SetNumberOfColors(count)
    for index in range(count):
        t = index / (count - 1)
        hue = 0.66 * (1.0 - t)  # blue (low) to red (high)
        red, green, blue = colorsys.hsv_to_rgb(hue, 1.0, 1.0)
        node.SetColor(index, f"{t:.3f}", red, green, blue, 0.0 if t < 0.1 else 0.6)
    node.SetAttribute(results.ROLE_ATTRIBUTE, "dose")
    scene.AddNode(node)
    return node


def _addTable(scene, name: str, columns: dict[str, list]):
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for title, values in columns.items():
        numeric = all(isinstance(v, (int, float, np.floating)) for v in values)
        column = vtkDoubleArray() if numeric else vtkStringArray()
        column.SetName(title)
        for value in values:
            column.InsertNextValue(float(value) if numeric else str(value))
        node.AddColumn(column)
    node.SetUseColumnTitleAsColumnHeader(True)
    return node


def _addDvhChart(scene, table, name: str, created: list):
    """A plot chart with one series per DVH column (the CT's solid, the sCT's dashed)."""
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    created.append(chart)
    chart.SetXAxisTitle("Dose (Gy)")
    chart.SetYAxisTitle("Volume (%)")
    chart.SetTitle("Dose-volume histograms")
    for column in range(1, table.GetNumberOfColumns()):
        title = table.GetColumnName(column)
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", title)
        created.append(series)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName(table.GetColumnName(0))
        series.SetYColumnName(title)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone)
        if title.endswith("sCT (%)"):
            series.SetLineStyle(series.LineStyleDash)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart
