"""The Slicer module's logic (``MedTransSlicerLib``), reused as is on the web app's MRML scene.

``MedTransSlicerLib`` lives in the Slicer module folder (``MedTransSlicer/MedTransSlicerLib``, where Slicer finds it)
and is packaged as a top-level package of the ``medtrans`` wheel (``pyproject.toml``), so there is exactly one copy
of the translation, guard-rail and display logic and the web app imports it like any installed package.
"""

from __future__ import annotations

from MedTransSlicerLib import (
    MedTransLogic,
    Preflight,
    TranslationOutputs,
    TranslationRun,
    guessModality,
    layout,
    results,
    volumes,
)

__all__ = [
    "MedTransLogic",
    "Preflight",
    "TranslationOutputs",
    "TranslationRun",
    "guessModality",
    "layout",
    "results",
    "volumes",
]
