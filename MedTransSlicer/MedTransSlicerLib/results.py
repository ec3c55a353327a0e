"""Result nodes of a translation: labelled synthetic volumes, the difference map and its colours, metrics, transform.

Everything here writes MRML only (no Qt), so desktop Slicer, the browser front end and the tests share it.
"""

from __future__ import annotations

import json
import math

import numpy as np
import SimpleITK as sitk
import slicer
from vtkmodules.vtkCommonCore import vtkDoubleArray, vtkStringArray

from .volumes import LPS_FROM_RAS, arrayToMatrix

ATTRIBUTE_PREFIX = "MedTrans."
SYNTHETIC_ATTRIBUTE = ATTRIBUTE_PREFIX + "Synthetic"
ROLE_ATTRIBUTE = ATTRIBUTE_PREFIX + "Role"
DIVERGING_COLOR_NAME = "MedTrans difference (blue-white-red)"
DIVERGING_COLORS = 256
# Order of the rows of the metrics table; metrics the core does not report are left out.
METRIC_ROWS = ("MAE", "ME", "PSNR", "SSIM", "MS_SSIM", "NMSE", "NCC", "MAE_air", "MAE_soft_tissue", "MAE_bone")
# The baselines scored against the same reference in the same mask ({key: column title}): the bar a model must clear.
SOURCE_AS_IS = "source as is"
HISTOGRAM_MATCHING = "histogram matching"
BASELINE_COLUMNS = {SOURCE_AS_IS: "Source as is", HISTOGRAM_MATCHING: "Histogram matching"}
# A model "does worse" than a baseline only by more than these margins (an identity model reproduces the source up
# to float rounding, which is no loss): MAE relative, SSIM absolute, PSNR in dB.
WORSE_MAE_MARGIN = 0.01
WORSE_SSIM_MARGIN = 0.001
WORSE_PSNR_MARGIN_DB = 0.05


def resultName(sourceName: str, targetModality: str, kind: str) -> str:
    """``"<source> -> CT (synthetic)"`` and its siblings ``(difference)``, ``(uncertainty)``, ``(metrics)``."""
    return f"{sourceName} -> {targetModality} ({kind})"


def markResult(
    node,
    role: str,
    settings: dict,
    warnings: list[str],
    synthetic: bool,
    limitations: str = "",
    sourceNames: dict[str, str] | None = None,
) -> None:
    """Attributes that say what a node is and how it was made.

    ``MedTrans.Synthetic`` is ``true`` on every image a model produced (synthetic volume, uncertainty) and
    ``false`` on derived comparisons (difference, metrics); the settings record model, version and options.
    ``MedTrans.SourceModalities`` lists every source (comma-separated, the source volume's first),
    ``MedTrans.SourceVolumes`` maps them to volume names (JSON) and ``MedTrans.Limitations`` is the model's own
    statement of what it cannot do.
    """
    node.SetAttribute(SYNTHETIC_ATTRIBUTE, "true" if synthetic else "false")
    node.SetAttribute(ROLE_ATTRIBUTE, role)
    for key, attribute in (
        ("model", "Model"),
        ("version", "ModelVersion"),
        ("family", "ModelFamily"),
        ("steps", "Steps"),
        ("seed", "Seed"),
        ("device", "Device"),
        ("source_modality", "SourceModality"),
        ("target_modality", "TargetModality"),
    ):
        value = settings.get(key)
        node.SetAttribute(ATTRIBUTE_PREFIX + attribute, "" if value is None else str(value))
    sources = sourceModalities(settings)
    node.SetAttribute(ATTRIBUTE_PREFIX + "SourceModalities", ",".join(sources))
    node.SetAttribute(ATTRIBUTE_PREFIX + "SourceVolumes", json.dumps(sourceNames or {}))
    node.SetAttribute(ATTRIBUTE_PREFIX + "Limitations", limitations)
    node.SetAttribute(ATTRIBUTE_PREFIX + "Settings", json.dumps(settings, sort_keys=True))
    node.SetAttribute(ATTRIBUTE_PREFIX + "Warnings", json.dumps(warnings))
    if synthetic:
        description = (
            f"SYNTHETIC {settings.get('target_modality')} made by MedTrans model {settings.get('model')} "
            f"{settings.get('version')} from {' + '.join(sources)}; not an acquired image."
        )
        if limitations:
            description += f" Model limitations: {limitations}"
        node.SetDescription(description)


def sourceModalities(settings: dict) -> list[str]:
    """Every source modality of a run, the source volume's first (``source_modalities``, else ``source_modality``)."""
    listed = settings.get("source_modalities")
    if listed:
        return [str(m) for m in listed]
    single = settings.get("source_modality")
    return [str(single)] if single else []


def modelLimitations(settings: dict, modelPath: str | None = None) -> str:
    """The model's limitations: from the run's settings when the core reports them, else from its bundle.

    Args:
        settings: the run's RESULT payload (``model`` is the bundle's name).
        modelPath: the bundle folder the run was given (``None``: look the name up among installed bundles).

    Returns:
        the text, or ``""`` when the bundle states none or cannot be found any more.
    """
    from MedTransCore.bundles import find_bundle
    from MedTransCore.errors import MedTransError

    text = settings.get("limitations")
    if text:
        return str(text)
    wanted = modelPath or settings.get("model")
    if not wanted:
        return ""
    try:
        bundle = find_bundle(wanted)
    except MedTransError:
        return ""
    return str(bundle.metadata.get("limitations") or "")


def setWindowLevel(volumeNode, level: float, width: float, colorNodeID: str | None = None) -> None:
    """Fixed display window (no auto window/level) and, optionally, a colour table."""
    display = volumeNode.GetDisplayNode()
    display.SetAutoWindowLevel(False)
    display.SetWindowLevel(float(width), float(level))
    if colorNodeID is not None:
        display.SetAndObserveColorNodeID(colorNodeID)


def findColorNodeByRole(scene: slicer.vtkMRMLScene, role: str) -> slicer.vtkMRMLColorTableNode | None:
    """The colour table MedTrans made for ``role`` (its ``MedTrans.Role`` attribute), if the scene has it."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLColorTableNode")
        if node.GetAttribute(ROLE_ATTRIBUTE) == role:
            return node
    return None


def findDivergingColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode | None:
    """The colour table made by :func:`divergingColorNode`, if the scene has it."""
    return findColorNodeByRole(scene, "diverging")


def divergingColorNode(scene: slicer.vtkMRMLScene) -> slicer.vtkMRMLColorTableNode:
    """The scene's blue-white-red colour table for signed differences (made once, then reused).

    Used with a window centred on 0, negative differences are blue, none white (and transparent), positive red.
    """
    existing = findDivergingColorNode(scene)
    if existing is not None:
        return existing
    node = scene.CreateNodeByClass("vtkMRMLColorTableNode")
    node.SetName(DIVERGING_COLOR_NAME)
    node.SetTypeToUser()
    node.SetNumberOfColors(DIVERGING_COLORS)
    half = (DIVERGING_COLORS - 1) / 2.0
    for index in range(DIVERGING_COLORS):
        t = (index - half) / half  # -1 (most negative) .. 1 (most positive)
        red, green, blue = (1.0, 1.0 - t, 1.0 - t) if t >= 0 else (1.0 + t, 1.0 + t, 1.0)
        # Opacity grows with |difference|: agreement stays see-through in the overlay on the synthetic image.
        node.SetColor(index, f"{t:+.3f}", red, green, blue, min(1.0, 2.0 * abs(t)))
    node.SetAttribute(ROLE_ATTRIBUTE, "diverging")
    scene.AddNode(node)
    return node


def symmetricRange(difference: np.ndarray, percentile: float = 99.0) -> float:
    """Half-width of the difference window: a robust maximum of ``|difference|`` (at least 1)."""
    finite = np.abs(difference[np.isfinite(difference)])
    if finite.size == 0:
        return 1.0
    return float(max(np.percentile(finite, percentile), 1.0))


def addMetricsTable(
    scene: slicer.vtkMRMLScene,
    metrics: dict[str, float],
    modality: str,
    name: str,
    baselines: dict[str, dict[str, float]] | None = None,
) -> slicer.vtkMRMLTableNode:
    """A table node with one row per metric: ``Metric``, ``Value`` (the synthetic's), ``Unit`` (NaN where undefined).

    Args:
        baselines: ``{"source as is": metrics, "histogram matching": metrics}`` against the same reference: each
            adds its column (``Source as is``, ``Histogram matching``) after ``Unit``, on the same rows.
    """
    from MedTransCore.metrics import metric_unit  # needs scipy: imported once the dependencies are installed

    names, values, units = vtkStringArray(), vtkDoubleArray(), vtkStringArray()
    names.SetName("Metric")
    values.SetName("Value")
    units.SetName("Unit")
    columns = [names, values, units]
    extra = []
    for key, title in BASELINE_COLUMNS.items():
        if baselines and key in baselines:
            column = vtkDoubleArray()
            column.SetName(title)
            columns.append(column)
            extra.append((column, baselines[key]))
    for key in METRIC_ROWS:
        if key in metrics:
            names.InsertNextValue(key)
            values.InsertNextValue(float(metrics[key]))
            units.InsertNextValue(metric_unit(key, modality))
            for column, baseline in extra:
                column.InsertNextValue(float(baseline.get(key, math.nan)))
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    for column in columns:
        table.AddColumn(column)
    table.SetUseColumnTitleAsColumnHeader(True)
    return table


def metricsFromTable(table: slicer.vtkMRMLTableNode) -> dict[str, float]:
    """The ``{metric: value}`` rows of a table made by :func:`addMetricsTable`."""
    vtkTable = table.GetTable()
    names, values = vtkTable.GetColumnByName("Metric"), vtkTable.GetColumnByName("Value")
    return {names.GetValue(row): values.GetValue(row) for row in range(vtkTable.GetNumberOfRows())}


def baselinesFromTable(table: slicer.vtkMRMLTableNode) -> dict[str, dict[str, float]]:
    """``{"source as is": {metric: value}, "histogram matching": {...}}`` of a table made by :func:`addMetricsTable`.

    A table without baseline columns (no reference, or made before they existed) gives ``{}``.
    """
    vtkTable = table.GetTable()
    names = vtkTable.GetColumnByName("Metric")
    found = {}
    for key, title in BASELINE_COLUMNS.items():
        column = vtkTable.GetColumnByName(title)
        if column is not None and names is not None:
            found[key] = {names.GetValue(row): column.GetValue(row) for row in range(vtkTable.GetNumberOfRows())}
    return found


def _worse(model: float, baseline: float, higherIsBetter: bool, margin: float) -> bool:
    """``model`` is worse than ``baseline`` by more than ``margin`` (NaN on either side: not worse)."""
    if math.isnan(model) or math.isnan(baseline):
        return False
    if higherIsBetter:
        return model < baseline - margin
    return model > baseline + margin


def baselineMetrics(
    source: np.ndarray, reference: np.ndarray, mask: np.ndarray, modality: str
) -> dict[str, dict[str, float]]:
    """The metrics of the baselines against the same reference in the same mask (as ``medtrans demo`` shows).

    ``source as is``: the source's own intensities. ``histogram matching``: the source's in-mask quantiles mapped
    onto the reference's in-mask quantiles (the bar a learned model has to clear on this very case).

    Args:
        source, reference: ``(Z, Y, X)`` intensities on one grid; mask: ``(Z, Y, X)`` bool, where to score.
        modality: the target's registry key (units, per-tissue rows).
    """
    from MedTransCore.metrics import compute_metrics  # needs scipy: imported once the dependencies are installed
    from MedTransCore.quantiles import match_quantiles, volume_quantiles

    matched = match_quantiles(source, volume_quantiles(source, mask), volume_quantiles(reference, mask))
    return {
        SOURCE_AS_IS: compute_metrics(source, reference, modality, mask=mask),
        HISTOGRAM_MATCHING: compute_metrics(matched.astype(np.float32), reference, modality, mask=mask),
    }


def baselineWarnings(metrics: dict[str, float], baselines: dict[str, dict[str, float]], modality: str) -> list[str]:
    """One warning per baseline the model loses to on this case, with the numbers.

    The rule: the model does worse than a baseline when its MAE is higher (by more than :data:`WORSE_MAE_MARGIN`,
    relative) AND its SSIM or its PSNR is lower (by more than :data:`WORSE_SSIM_MARGIN` /
    :data:`WORSE_PSNR_MARGIN_DB`). One metric alone is not a loss: MAE and SSIM/PSNR weigh errors differently.

    Args:
        metrics: the synthetic volume's metrics against the reference.
        baselines: ``{"source as is": metrics, "histogram matching": metrics}`` against the same reference and mask.
        modality: the target modality (for the units).
    """
    from MedTransCore.metrics import metric_unit

    warnings = []
    nan = math.nan
    for name, baseline in baselines.items():
        mae, baseMae = float(metrics.get("MAE", nan)), float(baseline.get("MAE", nan))
        if not _worse(mae, baseMae, False, WORSE_MAE_MARGIN * abs(baseMae)):
            continue
        ssim, baseSsim = float(metrics.get("SSIM", nan)), float(baseline.get("SSIM", nan))
        psnr, basePsnr = float(metrics.get("PSNR", nan)), float(baseline.get("PSNR", nan))
        lowerSsim = _worse(ssim, baseSsim, True, WORSE_SSIM_MARGIN)
        lowerPsnr = _worse(psnr, basePsnr, True, WORSE_PSNR_MARGIN_DB)
        if not (lowerSsim or lowerPsnr):
            continue
        numbers = [f"MAE {mae:.4g} vs {baseMae:.4g} {metric_unit('MAE', modality)}".rstrip()]
        if lowerSsim:
            numbers.append(f"SSIM {ssim:.3f} vs {baseSsim:.3f}")
        if lowerPsnr:
            numbers.append(f"PSNR {psnr:.1f} vs {basePsnr:.1f} {metric_unit('PSNR', modality)}".rstrip())
        warnings.append(f"on this case the model does worse than {name} ({', '.join(numbers)})")
    return warnings


def rasMatrixFromTransform(transform: sitk.Transform) -> np.ndarray:
    """The 4x4 RAS matrix of a SimpleITK rigid/affine transform (which maps LPS fixed points to moving points).

    A matrix-offset transform is ``y = A (x - c) + c + t``; in RAS it is ``F [A, t + c - A c] F`` with
    ``F = diag(-1, -1, 1, 1)``.
    """
    transform = transform.Downcast() if hasattr(transform, "Downcast") else transform
    if isinstance(transform, sitk.CompositeTransform):
        if transform.GetNumberOfTransforms() != 1:
            raise ValueError("expected one rigid transform")
        transform = transform.GetNthTransform(0).Downcast()
    linear = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    center = np.asarray(transform.GetCenter(), dtype=float)
    offset = np.asarray(transform.GetTranslation(), dtype=float) + center - linear @ center
    flip = np.eye(4)
    flip[:3, :3] = LPS_FROM_RAS
    lps = np.eye(4)
    lps[:3, :3], lps[:3, 3] = linear, offset
    return flip @ lps @ flip


def addRigidTransform(scene: slicer.vtkMRMLScene, transform: sitk.Transform, name: str):
    """A linear transform node that moves the (unaligned) reference onto the synthetic volume.

    SimpleITK's registration transform maps fixed (synthetic) points to moving (reference) points, which is
    Slicer's "from parent" direction for the reference: put the reference under this node to see it aligned.
    """
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
    node.SetMatrixTransformFromParent(arrayToMatrix(rasMatrixFromTransform(transform)))
    return node
