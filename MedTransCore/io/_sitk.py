"""Small helpers around SimpleITK's readers: their error messages and their warnings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import SimpleITK as sitk


def error_line(err: Exception) -> str:
    """The last non-empty line of an exception's message (SimpleITK puts the reason there)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


@contextmanager
def quiet_itk() -> Iterator[None]:
    """Keep ITK's raw warnings (``WARNING: In .../itkImageSeriesReader.hxx ...``) out of the user's terminal.

    The readers' callers check what those warnings are about (slice gaps, orientations) themselves and say it in
    their own words.
    """
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
