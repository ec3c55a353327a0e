"""The Slicer module's logic (``MedTransSlicer/MedTransSlicerLib``), reused as is on the web app's MRML scene.

``MedTransSlicerLib`` lives inside the Slicer module folder (Slicer puts that folder on ``sys.path``); from a
source checkout the web app does the same, so there is exactly one copy of the translation and display logic.
"""

from __future__ import annotations

import sys
from pathlib import Path

_MODULE_FOLDER = Path(__file__).resolve().parent.parent / "MedTransSlicer"
if _MODULE_FOLDER.is_dir() and str(_MODULE_FOLDER) not in sys.path:
    sys.path.insert(0, str(_MODULE_FOLDER))

from MedTransSlicerLib import (  # noqa: E402
    MedTransLogic,
    TranslationOutputs,
    TranslationRun,
    guessModality,
    layout,
    results,
    volumes,
)

__all__ = ["MedTransLogic", "TranslationOutputs", "TranslationRun", "guessModality", "layout", "results", "volumes"]
