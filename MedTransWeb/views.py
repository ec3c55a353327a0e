"""The comparison views: source | synthetic | reference slice views side by side, and an optional 3D view.

The slice views carry the singleton tags of the Slicer module's comparison layout (``Red``, ``Yellow``,
``Green``), so the logic's own display code (``MedTransLogic.showResults``, ``layout.setSliceLayers``) fills
them exactly as it fills desktop Slicer's views. This module adds only what the browser needs: remote views,
captions, slices that scroll together, window/level presets and the 3D view.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLViewNode
from trame.widgets import html
from trame_server import Server
from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui, create_vertical_view_gutter_ui
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import AbstractView, Layout, LayoutDirection, SliceView, ViewLayoutDefinition
from vtkmodules.vtkCommonCore import vtkObject

from MedTransCore.modalities import display_window, get_modality

from .presenting import CT_PRESETS
from .slicer_logic import layout

ROLES = ("source", "synthetic", "reference")
VIEW_TAGS = dict(zip(ROLES, layout.VIEW_NAMES, strict=True))  # source: Red, synthetic: Yellow, reference: Green
THREED_TAG = "ThreeD"
COMPARE_LAYOUT = "compare"
COMPARE_3D_LAYOUT = "compare+3d"
VR_PRESETS = {True: "CT-Bone", False: "MR-Default"}  # by "is CT-like"


@dataclass
class ShownVolume:
    """A volume in a slice view, with what its window presets need.

    Attributes:
        node: the volume node.
        is_ct: CT-like (HU): the CT presets apply; MR keeps its data-derived window.
        auto_window: ``(window, level)`` of the ``auto`` preset.
    """

    node: vtkMRMLScalarVolumeNode
    is_ct: bool
    auto_window: tuple[float, float]

    @classmethod
    def of(cls, node: vtkMRMLScalarVolumeNode, modality: str, array: np.ndarray) -> ShownVolume:
        """``node`` of ``modality`` (voxels ``array``): its ``auto`` window is the modality's display window."""
        level, width = display_window(modality, array)
        return cls(node, get_modality(modality).is_ct, (width, level))


@contextmanager
def _view_creation() -> Iterator[None]:
    """Silence VTK warnings while views are made: trame-slicer observes the interactor's WindowResizeEvent, which
    VTK 9.6 reports as deprecated once per view (a screenful of noise in the server's terminal)."""
    shown = vtkObject.GetGlobalWarningDisplay()
    vtkObject.SetGlobalWarningDisplay(0)
    try:
        yield
    finally:
        vtkObject.SetGlobalWarningDisplay(shown)


def _view_overlay(server: Server, view_id: str, view: AbstractView) -> None:
    """Gutter (reset camera, slice slider) plus a caption and an empty-view hint over each remote view."""
    if isinstance(view, SliceView):
        create_vertical_slice_view_gutter_ui(server, view_id, view)
    else:
        create_vertical_view_gutter_ui(server, view_id, view)
    role = {tag: role for role, tag in VIEW_TAGS.items()}.get(view_id, "threed")
    with html.Div(classes=f"mt-view-caption mt-view-caption-{role}"):
        html.Div(
            f"{{{{ view_titles['{view_id}'] }}}}",
            classes=f"mt-view-title mt-view-title-{role}",
            raw_attrs=[f'data-testid="view-title-{role}"'],
        )
        html.Div(
            f"{{{{ view_subtitles['{view_id}'] }}}}",
            v_if=(f"view_subtitles['{view_id}']",),
            classes="mt-view-subtitle",
            raw_attrs=[f'data-testid="view-subtitle-{role}"'],
        )
    html.Div(f"{{{{ view_hints['{view_id}'] }}}}", v_if=(f"view_hints['{view_id}']",), classes="mt-view-hint")


class ComparisonViews:
    """Owns the remote views and what each one shows.

    Args:
        slicer_app: the trame-slicer application (scene, view manager, volume rendering).
        server: the trame server.
        software_rendering: True on a CPU-only (llvmpipe) machine: no multisampling, adaptive volume rendering.
    """

    def __init__(self, slicer_app: SlicerApp, server: Server, *, software_rendering: bool) -> None:
        self._app = slicer_app
        self._server = server
        self._software = software_rendering
        self._shown: dict[str, ShownVolume] = {}
        self._syncing = False
        register_rca_factories(
            slicer_app.view_manager, server, slice_view_ui_f=_view_overlay, three_d_view_ui_f=_view_overlay
        )
        self.layout_manager = LayoutManager(slicer_app.scene, slicer_app.view_manager, server)
        slices = [
            ViewLayoutDefinition.slice_view("Axial", label=tag, color=layout.VIEW_COLORS[tag])
            for tag in VIEW_TAGS.values()
        ]
        row = Layout(LayoutDirection.Horizontal, slices)
        threed = ViewLayoutDefinition.threed_view(name=THREED_TAG, label="3D")
        both = Layout(LayoutDirection.Vertical, [row, threed], flex_sizes=["3", "2"])
        with _view_creation():
            self.layout_manager.register_layout(COMPARE_LAYOUT, row)
            self.layout_manager.register_layout(COMPARE_3D_LAYOUT, both, lazy_initialization=True)
            self.layout_manager.set_layout(COMPARE_LAYOUT)
        for view in self.slice_views():
            self._configure(view)
            view.modified.connect(self.sync_slices)
        tags = [*VIEW_TAGS.values(), THREED_TAG]
        server.state.view_titles = dict.fromkeys(tags, "") | {THREED_TAG: "3D · SYNTHETIC"}
        server.state.view_hints = dict.fromkeys(tags, "")
        server.state.view_subtitles = dict.fromkeys(tags, "")

    def _configure(self, view: AbstractView) -> None:
        if self._software:
            view.render_window().SetMultiSamples(0)
        node = view.get_view_node()
        if isinstance(node, vtkMRMLViewNode):
            node.SetVolumeRenderingQuality(vtkMRMLViewNode.Adaptive)
            node.SetExpectedFPS(8.0 if self._software else 30.0)

    @property
    def scene(self):
        return self._app.scene

    def slice_view(self, role: str) -> SliceView:
        return self._app.view_manager.get_view(VIEW_TAGS[role])

    def slice_views(self) -> list[SliceView]:
        return [self.slice_view(role) for role in ROLES]

    def set_captions(self, captions: dict[str, tuple[str, str, str]]) -> None:
        """Set ``(title, subtitle, empty-view hint)`` of each role given (the others keep theirs)."""
        state = self._server.state
        for key, index in (("view_titles", 0), ("view_subtitles", 1), ("view_hints", 2)):
            state[key] = state[key] | {VIEW_TAGS[role]: caption[index] for role, caption in captions.items()}

    def show(self, role: str, volume: ShownVolume | None, preset: str = "auto") -> None:
        """Show ``volume`` alone in the slice view of ``role`` (``None`` empties it)."""
        layout.setSliceLayers(self.scene, VIEW_TAGS[role], volume.node if volume else None)
        self.track(role, volume, preset)

    def track(self, role: str, volume: ShownVolume | None, preset: str = "auto") -> None:
        """Record what the logic put in the view of ``role``, apply ``preset`` and refit the views."""
        if volume is None:
            self._shown.pop(role, None)
        else:
            self._shown[role] = volume
            self.apply_window(preset, roles=[role])
        for view in self.slice_views():
            view.reset_view()
        source = self.slice_view("source")
        self.sync_slices(source if "source" in self._shown else self.slice_view(role))

    def apply_window(self, preset: str, roles: list[str] | None = None) -> None:
        """Apply a window/level preset to the CT-like volumes shown (MR keeps its data-derived window)."""
        if preset not in CT_PRESETS:
            raise ValueError(f"unknown window preset {preset!r}; choose one of {list(CT_PRESETS)}")
        for role in roles or list(self._shown):
            shown = self._shown.get(role)
            if shown is None:
                continue
            window, level = CT_PRESETS[preset] if shown.is_ct and CT_PRESETS[preset] else shown.auto_window
            display = shown.node.GetDisplayNode()
            display.SetAutoWindowLevel(0)
            display.SetWindowLevel(window, level)
            self.slice_view(role).schedule_render()

    def set_difference(self, synthetic, difference, visible: bool) -> None:
        """Overlay ``difference`` on ``synthetic`` in the synthetic view (the logic's opacity and colours)."""
        overlay = difference if visible else None
        layout.setSliceLayers(self.scene, VIEW_TAGS["synthetic"], synthetic, overlay, layout.DIFFERENCE_OPACITY)
        self.slice_view("synthetic").schedule_render()

    def set_threed(self, visible: bool, node: vtkMRMLScalarVolumeNode | None, is_ct: bool = True) -> None:
        """Switch the 3D view (volume rendering of ``node``, a CT or an MR preset) on or off."""
        with _view_creation():
            self.layout_manager.set_layout(COMPARE_3D_LAYOUT if visible else COMPARE_LAYOUT)
        view = self._app.view_manager.get_view(THREED_TAG)
        if view is None:
            return
        self._configure(view)
        for display in self.scene.GetNodesByClass("vtkMRMLVolumeRenderingDisplayNode"):
            display.SetVisibility(False)
        if visible and node is not None:
            # Not DisplayManager.show_volume: it would also put the node in every slice view.
            display = self._app.volume_rendering.create_display_node(node, VR_PRESETS[is_ct])
            display.SetViewNodeIDs([view.get_view_node_id()])
            display.SetVisibility(True)
            view.reset_view()
        view.schedule_render()

    def reset(self) -> None:
        """Fit every view to its content again."""
        for view in self._app.view_manager.get_views():
            view.reset_view()

    def sync_slices(self, changed: SliceView) -> None:
        """Keep every slice view on the offset of ``changed`` (the view the user scrolled)."""
        if self._syncing:
            return
        self._syncing = True
        try:
            offset = changed.get_slice_value()
            for view in self.slice_views():
                if view is not changed and abs(view.get_slice_value() - offset) > 1e-6:
                    view.set_slice_value(offset)
        finally:
            self._syncing = False
