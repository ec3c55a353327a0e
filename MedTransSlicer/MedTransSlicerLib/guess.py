"""Pre-fill the source modality: DICOM Modality, then series description / node name, then intensities."""

from __future__ import annotations

import re

import numpy as np

DICOM_MODALITY_ATTRIBUTE = "DICOM.Modality"
# Keyword patterns of series descriptions, most specific first (first match wins).
DESCRIPTION_PATTERNS: tuple[tuple[str, str], ...] = (
    ("CBCT", r"cbct|cone[\s_-]*beam|\bcb[\s_-]?ct\b"),
    ("MR_FLAIR", r"flair"),
    ("MR_T1C", r"t1[\s_-]*(c|ce|gd|post|\+\s*c)\b|t1.*(gad|contrast|post)|\bmprage.*(gad|post)"),
    ("MR_T2", r"\bt2"),
    ("MR_T1", r"\bt1|mprage|spgr|tfl"),
    ("MR_PD", r"\bpd\b|proton[\s_-]*density"),
    ("CT_ARTERIAL", r"arterial|\bart\b|angio|\bcta\b"),
    ("CT_VENOUS", r"venous|portal|\bpv\b"),
)
# Air in CT is about -1000 HU; MR intensities are not negative.
CT_AIR_BELOW = -500.0


def guessModality(
    description: str = "", dicomModality: str | None = None, array: np.ndarray | None = None
) -> str | None:
    """Best guess of a volume's modality registry key, or ``None`` when nothing points anywhere.

    Args:
        description: series description and/or node name (keywords such as ``CBCT``, ``T1 post``, ``FLAIR``).
        dicomModality: the DICOM Modality tag (``"CT"``, ``"MR"``), if known.
        array: the intensities, used when neither tag nor description decides (negative air -> CT, else MR).

    Returns:
        A key of ``MedTransCore.modalities.MODALITIES`` or ``None``.
    """
    text = description.lower()
    keyword = next((key for key, pattern in DESCRIPTION_PATTERNS if re.search(pattern, text)), None)
    dicom = (dicomModality or "").upper()
    if dicom == "CT":
        return keyword if keyword in ("CBCT", "CT_ARTERIAL", "CT_VENOUS") else "CT"
    if dicom == "MR":
        return keyword if keyword is not None and keyword.startswith("MR_") else "MR_T1"
    if keyword is not None:
        return keyword
    if array is not None and array.size:
        finite = array[np.isfinite(array)]
        if finite.size:
            return "CT" if float(np.percentile(finite, 1.0)) < CT_AIR_BELOW else "MR_T1"
    return None


def dicomModalityOfNode(volumeNode) -> str | None:
    """The DICOM Modality of a volume loaded from DICOM (node attribute or its subject hierarchy item)."""
    import slicer

    value = volumeNode.GetAttribute(DICOM_MODALITY_ATTRIBUTE)
    if value:
        return value
    scene = volumeNode.GetScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene) if scene is not None else None
    if hierarchy is None:
        return None
    item = hierarchy.GetItemByDataNode(volumeNode)
    if not item:
        return None
    return hierarchy.GetItemAttribute(item, DICOM_MODALITY_ATTRIBUTE) or None


def guessModalityOfNode(volumeNode) -> str | None:
    """:func:`guessModality` for an MRML volume node (its DICOM tag, name/description and voxels)."""
    from .volumes import arrayFromVolume

    if volumeNode is None or volumeNode.GetImageData() is None:
        return None
    image = volumeNode.GetImageData()
    array = arrayFromVolume(volumeNode) if image.GetPointData().GetScalars() is not None else None
    description = " ".join(filter(None, (volumeNode.GetName(), volumeNode.GetDescription())))
    return guessModality(description, dicomModalityOfNode(volumeNode), array)
