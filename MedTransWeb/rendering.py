"""Off-screen rendering on a server: EGL without a display, and settings for software (CPU) OpenGL."""

from __future__ import annotations

import os

SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast", "swiftshader")


def configure_headless_rendering() -> None:
    """Make VTK render through EGL when no X display is available (Mesa's llvmpipe on a CPU-only machine).

    Must run before the first render window is created; an explicit ``VTK_DEFAULT_OPENGL_WINDOW`` wins.
    """
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


def opengl_renderer() -> str:
    """The OpenGL renderer string of an off-screen render window (e.g. ``llvmpipe (LLVM 15.0.6, 256 bits)``)."""
    import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL render window)
    from vtkmodules.vtkRenderingCore import vtkRenderWindow

    window = vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(8, 8)
    window.Render()
    report = window.ReportCapabilities() or ""
    window.Finalize()
    for line in report.splitlines():
        if "renderer string" in line:
            return line.split(":", 1)[1].strip()
    return ""


def is_software_renderer(renderer: str) -> bool:
    """True for Mesa/Chromium CPU rasterisers, where multisampling and full-quality volume rendering are too slow."""
    return any(name in renderer.lower() for name in SOFTWARE_RENDERERS)
