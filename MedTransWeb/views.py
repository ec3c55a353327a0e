"""The comparison views: source | synthetic | reference slice views side by side, and an optional 3D view.

The slice views carry the singleton tags of the Slicer module's comparison layout (``Red``, ``Yellow``,
``Green``), so the logic's own display code (``MedTransLogic.showResults``, ``layout.setSliceLayers``) fills
them exactly as it fills desktop Slicer's views. This module adds only what the browser needs: remote views,
captions and annotations, slices that scroll together and re-centre on every new volume, window/level presets and
mouse-drag window/level, and the 3D view. Zoom (right drag) and pan (middle drag) are linked by the slice
composite nodes' linked control (``layout.setSliceLayers``), as in desktop Slicer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from slicer import (
    vtkMRMLInteractionNode,
    vtkMRMLScalarBarDisplayableManager,
    vtkMRMLScalarVolumeNode,
    vtkMRMLViewNode,
)
from trame_server import Server
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import AbstractView, Layout, LayoutDirection, SliceView, ViewLayoutDefinition
from vtkmodules.vtkCommonCore import vtkObject
from vtkmodules.vtkCommonMath import vtkMatrix4x4

from MedTransCore.modalities import display_window, get_modality

from . import annotations, difference_overlay, dose_overlay, windows
from .slicer_logic import layout
from .view_overlays import view_overlay

ROLES = ("source", "synthetic", "reference")
VIEW_TAGS = dict(zip(ROLES, layout.VIEW_NAMES, strict=True))  # source: Red, synthetic: Yellow, reference: Green
ROLE_OF_TAG = {tag: role for role, tag in VIEW_TAGS.items()}
THREED_TAG = "ThreeD"
COMPARE_LAYOUT = "compare"
COMPARE_3D_LAYOUT = "compare+3d"
VR_PRESETS = {True: "CT-Bone", False: "MR-Default"}  # by "is CT-like"


@dataclass
class ShownVolume:
    """A volume in a slice view, with what its window presets need.

    Attributes:
        node: the volume node.
        is_ct: CT-like (HU): the CT presets apply; else the MR ones.
        auto_window: ``(window, level)`` of the ``auto`` preset (the modality's display window).
        stats: intensity percentiles (MR presets, full range).
    """

    node: vtkMRMLScalarVolumeNode
    is_ct: bool
    auto_window: tuple[float, float]
    stats: windows.VolumeStats

    @classmethod
    def of(cls, node: vtkMRMLScalarVolumeNode, modality: str, array: np.ndarray) -> ShownVolume:
        """``node`` of ``modality`` (voxels ``array``): its ``auto`` window is the modality's display window."""
        level, width = display_window(modality, array)
        return cls(node, get_modality(modality).is_ct, (width, level), windows.VolumeStats.of(array))


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


def _matrix(vtk_matrix: vtkMatrix4x4) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(i, j) for j in range(4)] for i in range(4)])


def _overlay(server: Server, view_id: str, view: AbstractView) -> None:
    view_overlay(server, view_id, view, ROLE_OF_TAG.get(view_id, "threed"))


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
        self._overlay = None  # (kind, source node, its label-map overlay) while one exists: "difference" or "dose"
        register_rca_factories(slicer_app.view_manager, server, slice_view_ui_f=_overlay, three_d_view_ui_f=_overlay)
        self.layout_manager = LayoutManager(slicer_app.scene, slicer_app.view_manager, server)
        slices = [
            ViewLayoutDefinition.slice_view("Axial", label=tag, color=layout.VIEW_COLORS[tag])
            for tag in VIEW_TAGS.values()
        ]
        row = Layout(LayoutDirection.Horizontal, slices)
        threed = ViewLayoutDefinition.threed_view(name=THREED_TAG, label="3D")
        both = Layout(LayoutDirection.Vertical, [row, threed], flex_sizes=["3", "2"])
        tags = [*VIEW_TAGS.values(), THREED_TAG]
        server.state.view_titles = dict.fromkeys(tags, "") | {THREED_TAG: "3D · SYNTHETIC"}
        server.state.view_hints = dict.fromkeys(tags, "")
        server.state.view_subtitles = dict.fromkeys(tags, "")
        server.state.view_annotations = dict.fromkeys(VIEW_TAGS.values(), {})
        with _view_creation():
            self.layout_manager.register_layout(COMPARE_LAYOUT, row)
            self.layout_manager.register_layout(COMPARE_3D_LAYOUT, both, lazy_initialization=True)
            self.layout_manager.set_layout(COMPARE_LAYOUT)
        for view in self.slice_views():
            self._configure(view)
            view.modified.connect(self.sync_slices)
            view.modified.connect(self.annotate)
        self._window_level_mouse_mode()

    def _configure(self, view: AbstractView) -> None:
        if self._software:
            view.render_window().SetMultiSamples(0)
        node = view.get_view_node()
        if isinstance(node, vtkMRMLViewNode):
            node.SetVolumeRenderingQuality(vtkMRMLViewNode.Adaptive)
            node.SetExpectedFPS(8.0 if self._software else 30.0)
        if isinstance(view, SliceView):
            self._enable_window_level_drag(view)

    @staticmethod
    def _enable_window_level_drag(view: SliceView) -> None:
        """The difference overlay keeps its symmetric window when the user drags over it (the image below changes)."""
        manager = view.get_displayable_manager_by_class(vtkMRMLScalarBarDisplayableManager)
        if manager is not None:
            manager.GetWindowLevelWidget().SetForegroundVolumeEditable(False)

    def _window_level_mouse_mode(self) -> None:
        """Left drag adjusts the window (horizontal) and level (vertical) of the image under the mouse: desktop
        Slicer's window/level mouse mode. Right drag still zooms, middle drag pans, the wheel scrolls slices, and
        the 3D view still rotates."""
        node = self.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        if node is not None:
            node.SetCurrentInteractionMode(vtkMRMLInteractionNode.AdjustWindowLevel)

    @property
    def scene(self):
        return self._app.scene

    def slice_view(self, role: str) -> SliceView:
        return self._app.view_manager.get_view(VIEW_TAGS[role])

    def slice_views(self) -> list[SliceView]:
        return [self.slice_view(role) for role in ROLES]

    def shown(self, role: str) -> ShownVolume | None:
        return self._shown.get(role)

    def set_captions(self, captions: dict[str, tuple[str, str, str]]) -> None:
        """Set ``(title, subtitle, empty-view hint)`` of each role given (the others keep theirs)."""
        state = self._server.state
        for key, index in (("view_titles", 0), ("view_subtitles", 1), ("view_hints", 2)):
            state[key] = state[key] | {VIEW_TAGS[role]: caption[index] for role, caption in captions.items()}

    def show(self, role: str, volume: ShownVolume | None, preset: str = windows.AUTO) -> None:
        """Show ``volume`` alone in the slice view of ``role`` (``None`` empties it) and centre the views on it."""
        layout.setSliceLayers(self.scene, VIEW_TAGS[role], volume.node if volume else None)
        self.track(role, volume, preset, recentre=volume is not None)

    def track(self, role: str, volume: ShownVolume | None, preset: str = windows.AUTO, recentre: bool = False) -> None:
        """Record what the logic put in the view of ``role``, apply ``preset`` and refit the views.

        Args:
            recentre: move every slice view to the middle of ``volume`` (a new source or reference); else they
                keep the source's slice (a result appears where the user was looking).
        """
        if volume is None:
            self._shown.pop(role, None)
        else:
            self._shown[role] = volume
            self.apply_window(preset, roles=[role])
        state = self._server.state
        state.window_items = windows.window_items({v.is_ct for v in self._shown.values()})
        if state.window_preset not in [item["value"] for item in state.window_items]:
            state.window_preset = windows.AUTO  # fits none of the volumes shown now
        if recentre and volume is not None:
            self.centre_on(volume.node)
            return
        for view in self.slice_views():
            view.reset_view()
        source = self.slice_view("source")
        self.sync_slices(source if "source" in self._shown else self.slice_view(role))

    def centre_on(self, node) -> None:
        """Fit every slice view to its content and move them all to the middle slice of ``node``."""
        bounds = [0.0] * 6
        node.GetRASBounds(bounds)
        centre = [(bounds[2 * axis] + bounds[2 * axis + 1]) / 2 for axis in range(3)]
        for view in self.slice_views():
            view.get_view_node().JumpSliceByOffsetting(*centre)
            view.reset_view()  # fits the field of view and snaps the offset to the volume's slices
        role = next((r for r, shown in self._shown.items() if shown.node is node), "source")
        self.sync_slices(self.slice_view(role))

    def reset(self) -> None:
        """Fit every view to its content again and re-centre the slices on the source (else the reference)."""
        for view in self._app.view_manager.get_views():
            view.reset_view()
        first = next((self._shown[role] for role in ("source", "reference") if role in self._shown), None)
        if first is not None:
            self.centre_on(first.node)

    def apply_window(self, preset: str, roles: list[str] | None = None) -> None:
        """Apply a window/level preset to the volumes shown that it applies to (a CT preset leaves MR alone)."""
        if preset not in windows.PRESETS:
            raise ValueError(f"unknown window preset {preset!r}; choose one of {list(windows.PRESETS)}")
        for role in roles or list(self._shown):
            shown = self._shown.get(role)
            if shown is None:
                continue
            window = windows.preset_window(preset, shown.is_ct, shown.stats, shown.auto_window)
            if window is None:  # not for this modality: a new volume gets its default, a shown one keeps its own
                if roles is None:
                    continue
                window = shown.auto_window
            display = shown.node.GetDisplayNode()
            display.SetAutoWindowLevel(0)
            display.SetWindowLevel(*window)
            self.slice_view(role).schedule_render()

    def set_difference(self, synthetic, difference, visible: bool, unit: str = "") -> None:
        """Show ``synthetic`` in the synthetic view with ``difference`` over it (when ``visible``): red above zero,
        blue below, transparent where they agree (:mod:`.difference_overlay`), with its colour bar in ``unit``.
        The dose wash (:meth:`set_dose`) shares the label layer: showing one hides the other."""
        layout.setSliceLayers(self.scene, VIEW_TAGS["synthetic"], synthetic)  # no foreground: the label layer is
        bar = {}
        if visible and difference is not None:
            self._label_overlay("difference", difference, difference_overlay.add_overlay_node)
            span = difference.GetDisplayNode().GetWindow() / 2
            bar = {"high": f"+{span:.0f} {unit}".strip(), "low": f"−{span:.0f} {unit}".strip(), "unit": unit or " "}
        elif difference is None or self._overlay_kind() == "difference":  # no result, or the difference goes
            self._label_overlay(None)
        self._server.state.difference_bar = bar

    def set_dose(self, dose, visible: bool) -> None:
        """The dose colour wash of ``dose`` over the synthetic view (when ``visible``; see :mod:`.dose_overlay`)."""
        if visible and dose is not None:
            self._label_overlay("dose", dose, dose_overlay.add_dose_overlay_node)
        elif dose is None or self._overlay_kind() == "dose":
            self._label_overlay(None)

    def set_gamma(self, gamma, visible: bool) -> None:
        """The gamma map ``gamma`` over the synthetic view (when ``visible``; see :mod:`.dose_overlay`)."""
        if visible and gamma is not None:
            self._label_overlay("gamma", gamma, dose_overlay.add_gamma_overlay_node)
        elif gamma is None or self._overlay_kind() == "gamma":
            self._label_overlay(None)

    def _overlay_kind(self) -> str | None:
        return None if self._overlay is None else self._overlay[0]

    def _label_overlay(self, kind: str | None, source=None, make=None) -> None:
        """Show the label map ``make(scene, source)`` in the synthetic view's label layer (``kind`` None: nothing);
        the previous one is removed when it was made from another node."""
        composite = self._composite(VIEW_TAGS["synthetic"])
        if self._overlay is not None and self._overlay[1] is not source:
            composite.SetLabelVolumeID(None)
            self.scene.RemoveNode(self._overlay[2].GetDisplayNode())
            self.scene.RemoveNode(self._overlay[2])
            self._overlay = None
        if kind is not None:
            if self._overlay is None:
                self._overlay = (kind, source, make(self.scene, source))
            composite.SetLabelVolumeID(self._overlay[2].GetID())
            composite.SetLabelOpacity(1.0)
        self.slice_view("synthetic").schedule_render()

    def _composite(self, tag: str):
        """The slice composite node of view ``tag`` (its background, foreground and label layers)."""
        for node in self.scene.GetNodesByClass("vtkMRMLSliceCompositeNode"):
            if node.GetLayoutName() == tag:
                return node
        raise LookupError(f"no slice composite node for view {tag}")

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

    def annotate(self, view: SliceView) -> None:
        """Update the patient directions and the slice number/position shown over ``view``."""
        tag = view.get_singleton_tag()
        slice_node = view.get_view_node()
        if tag not in ROLE_OF_TAG or slice_node is None:
            return
        slice_to_ras = _matrix(slice_node.GetSliceToRAS())
        shown = self._shown.get(ROLE_OF_TAG[tag])
        if shown is None:
            text = {"shown": False}
        else:
            ras_to_ijk = vtkMatrix4x4()
            shown.node.GetRASToIJKMatrix(ras_to_ijk)
            size = shown.node.GetImageData().GetDimensions()
            text = {
                "shown": True,
                **annotations.orientation_labels(slice_to_ras),
                "slice": annotations.slice_text(slice_to_ras, _matrix(ras_to_ijk), size),
            }
        state = self._server.state
        if state.view_annotations.get(tag) != text:
            state.view_annotations = state.view_annotations | {tag: text}

    def annotate_all(self) -> None:
        for view in self.slice_views():
            self.annotate(view)
