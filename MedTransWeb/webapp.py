"""``MedTransWebApp``: the page's server side, trame-slicer views on an MRML scene and the Slicer module's logic.

Every action runs on the server's event loop. This module loads volumes (the demo phantom, uploads, added
sources); :mod:`.guard_rails` keeps the state coherent and asks the logic before a run; :mod:`.translation` runs,
cancels and shows the result.
"""

from __future__ import annotations

import asyncio
import functools
import tempfile

import SimpleITK as sitk
from trame.app import TrameApp
from trame_server import Server
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import SlicerApp

from MedTransCore.modalities import get_modality

from . import presenting
from .dose_check import DoseMixin, initial_dose_state
from .guard_rails import ORIGIN_DEMO, ORIGIN_UPLOAD, GuardRailsMixin, guess_reference_modality
from .rendering import configure_headless_rendering, is_software_renderer, opengl_renderer
from .reporting import logger, reported
from .slicer_logic import MedTransLogic, guessModality, volumes
from .translation import TranslationMixin
from .ui import PageCallbacks, build_page
from .uploads import UploadLimits, read_upload
from .views import ComparisonViews, ShownVolume

__all__ = ["DEMO", "MedTransWebApp", "logger"]
# The demo: the head phantom of the core; CBCT -> CT first, any other modality on demand.
DEMO = {"anatomy": "head", "seed": 0, "shape": (64, 64, 64), "spacing": (3.0, 3.0, 3.0)}


class MedTransWebApp(GuardRailsMixin, TranslationMixin, DoseMixin, TrameApp):
    """One page: load a volume (and other sequences of the same patient), translate it, compare, download.

    Args:
        server: trame server (default: a new one).
        limits: upload limits.
        software_rendering: force (True/False) the CPU-rendering settings; ``None`` detects llvmpipe.
    """

    def __init__(
        self,
        server: Server | str | None = None,
        *,
        limits: UploadLimits | None = None,
        software_rendering: bool | None = None,
    ) -> None:
        configure_headless_rendering()  # before the first render window
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)  # the chunked file loader used by the upload buttons
        self.limits = limits or UploadLimits()
        if software_rendering is None:
            software_rendering = is_software_renderer(opengl_renderer())
        self.slicer = SlicerApp()
        self.logic = MedTransLogic(self.slicer.scene)
        self.views = ComparisonViews(self.slicer, self.server, software_rendering=software_rendering)
        self.nodes: dict[str, object] = {}  # "source", "reference" -> volume node
        self.modalities: dict[str, str] = {}  # "source", "reference" -> modality key of that node
        self.origin: dict[str, str] = {}  # "source", "reference" -> ORIGIN_DEMO or ORIGIN_UPLOAD
        self.names: dict[str, str] = {}  # "source", "reference" -> the volume's name
        self.sizes: dict[str, str] = {}  # "source", "reference" -> "name · size · spacing"
        self.extras: dict[int, object] = {}  # id of an added source -> its volume node (state.extra_sources: the rest)
        self._next_extra = 1
        self.demo: dict[str, str] | None = None  # role -> phantom modality while the demo is shown
        self.reference_named = False  # the reference's name or description gave its modality
        self.reference_explicit = False  # the user chose the reference's modality
        self.reference_checked: tuple[str, ...] = ()  # the overlap check's warnings for the reference
        self.reference_for: str | None = None  # the source the reference was loaded for
        self.reference_was_changed = False  # the reference changed after the result was compared with it
        self.outputs = None  # TranslationOutputs of the last successful run
        self.run = None  # TranslationRun in flight
        self.translate_clicked = 0.0  # time.monotonic() of the last Translate
        self._chunks: dict[str, list[dict]] = {"source": [], "reference": [], "extra": []}
        self._tasks: set[asyncio.Task] = set()
        self.state.update({**presenting.initial_state(self.limits.max_bytes), **initial_dose_state()})
        callbacks = PageCallbacks(
            load_demo=self.load_demo,
            confirm_demo=self.confirm_demo,
            upload_chunk=self.upload_chunk,
            set_extra_modality=self.set_extra_modality,
            remove_extra_source=self.remove_extra_source,
            set_reference_modality=self.set_reference_modality,
            remove_reference=self.remove_reference,
            translate_or_cancel=self.translate_or_cancel,
            dose_or_cancel=self.dose_or_cancel,
            download_nifti=functools.partial(self.download, dicom=False),
            download_dicom=functools.partial(self.download, dicom=True),
            reset_views=self.views.reset,
        )
        self.ui = build_page(self.server, self.views.layout_manager.initialize_layout_grid, callbacks)
        self.state.change("source_modality", "target_modality")(self._on_pair_changed)
        self.state.change("model")(lambda **_: self.request_preflight())
        self.state.change("window_preset")(lambda window_preset, **_: self.views.apply_window(window_preset))
        self.state.change("show_difference")(lambda **_: self._on_difference_toggled())
        self.state.change("show_dose")(self.on_dose_toggled)
        self.state.change("show_gamma")(self.on_gamma_toggled)
        self.state.change("show_3d")(self._on_threed_toggled)
        self._on_pair_changed(self.state.source_modality, self.state.target_modality)

    # -- state helpers -----------------------------------------------------------------------------------------

    def report_error(self, message: str) -> None:
        with self.state:
            self.state.status = f"error: {message}"
            self.state.uploading = ""

    def _spawn(self, coroutine) -> None:
        """Run page work as a task: wslink handles one message at a time per client, so an action that awaited
        its work would hold back every later message (Cancel, view interaction) until it ended."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refresh_captions(self) -> None:
        outputs = self.outputs
        span = None
        if outputs is not None and outputs.differenceNode is not None and self.state.show_difference:
            span = outputs.differenceNode.GetDisplayNode().GetWindow() / 2
        captions = presenting.view_captions(
            self.state.source_modality,
            self.state.target_modality,
            has_source="source" in self.nodes,
            reference_modality=self.modalities.get("reference") if "reference" in self.nodes else None,
            settings=outputs.settings if outputs is not None else None,
            difference_span=span,
        )
        self.views.set_captions(captions)

    def _on_pair_changed(self, source_modality: str, target_modality: str, **_) -> None:
        bundles = self.logic.availableModels(source_modality, target_modality)
        self.state.model_items = presenting.model_items(bundles)
        if self.state.model not in [item["value"] for item in self.state.model_items]:
            self.state.model = presenting.AUTO_MODEL
        if "source" in self.nodes and self.modalities.get("source") != source_modality:
            self.modalities["source"] = source_modality  # the user's word for what the source is
            self.show_volume("source")
            self.update_info("source")
        self.follow_target(target_modality)
        self._refresh_captions()
        self._follow_demo(source_modality, target_modality)
        self.request_preflight()

    def _on_difference_toggled(self) -> None:
        if self.state.show_difference:
            self.state.update({"show_dose": False, "show_gamma": False})  # one overlay at a time
        if self.outputs is not None:
            self._show_difference()
            self._refresh_captions()

    def _on_threed_toggled(self, show_3d: bool, **_) -> None:
        outputs = self.outputs
        if outputs is None:
            self.views.set_threed(bool(show_3d), None)
            return
        is_ct = get_modality(outputs.settings["target_modality"]).is_ct
        self.views.set_threed(bool(show_3d), outputs.syntheticNode, is_ct)

    # -- loading -----------------------------------------------------------------------------------------------

    def _add_volume(self, role: str, image: sitk.Image, name: str, modality: str, metadata=None, node=None) -> None:
        """Replace the ``role`` volume by ``image`` (or its ready ``node``) and show it, centred."""
        if role == "source":
            self.clear_result()
        self._remove_node(self.nodes.pop(role, None))
        if node is None:
            node = self._make_node(image, name, metadata)
        self.nodes[role], self.modalities[role] = node, modality
        self.names[role], self.sizes[role] = name, presenting.volume_size(name, image)
        self.show_volume(role, recentre=True)
        self.update_info(role)
        if role == "source":
            self.state.update({"source_modality": modality, "has_source": True})
        else:
            self.state.update({"has_reference": True, "reference_modality": modality, "reference_note": ""})
        self._refresh_captions()
        self.request_preflight()

    def _make_node(self, image: sitk.Image, name: str, metadata=None):
        array = sitk.GetArrayFromImage(image)
        node = volumes.addVolumeNode(self.slicer.scene, array, volumes.ijkToRasFromImage(image), name)
        volumes.markPhantom(node, metadata if metadata is not None else image)
        return node

    def show_volume(self, role: str, recentre: bool = False) -> None:
        """(Re)show the ``role`` volume in its view with its modality's window (and centre the views on it)."""
        node = self.nodes[role]
        shown = ShownVolume.of(node, self.modalities[role], volumes.arrayFromVolume(node))
        if recentre:
            self.views.show(role, shown, self.state.window_preset)
        else:
            self.views.track(role, shown, self.state.window_preset)

    def update_info(self, role: str) -> None:
        label = f"{role.capitalize()} ({presenting.modality_word(self.modalities[role])})"
        self.state[f"{role}_info"] = f"{label}: {self.sizes[role]}"

    def load_demo(self) -> None:
        """The demo phantom; over a result, the page asks first (``confirm_demo``)."""
        if self.state.running:
            return
        if self.outputs is not None:
            self.state.confirm_demo = True
            return
        self._spawn(self._load_demo({"source": "CBCT", "reference": "CT"}))

    def confirm_demo(self, confirmed: bool) -> None:
        self.state.confirm_demo = False
        if confirmed and not self.state.running:
            self.clear_result()
            self._spawn(self._load_demo({"source": "CBCT", "reference": "CT"}))

    @reported
    async def _load_demo(self, modalities: dict[str, str]) -> None:
        """Phantom images of the head (``role -> modality``); the demo then follows the modality choices."""
        from MedTransCore.phantoms import generate_phantom

        with self.state:
            self.state.status = "generating the demo phantom"
        keys = sorted(set(modalities.values()))
        case = await asyncio.to_thread(functools.partial(generate_phantom, **DEMO, modalities=keys))
        with self.state:
            self.demo = {**(self.demo or {}), **modalities}
            for role, modality in modalities.items():
                name = f"Demo head phantom {presenting.modality_word(modality)}"
                self.origin[role] = ORIGIN_DEMO
                self._add_volume(role, case.images[modality], name, modality)
                if role == "reference":
                    self.reference_named, self.reference_explicit, self.reference_checked = True, False, ()
                    self.reference_for = "the demo"
                    self.reference_changed()
            if "reference" in modalities:
                self.state.target_modality = modalities["reference"]
            self.refresh_reference_warnings()
            self.state.status = "ready: demo phantom loaded; press Translate"

    def _follow_demo(self, source_modality: str, target_modality: str) -> None:
        """With the demo loaded, show the phantom in the newly chosen source/target modality (any to any)."""
        if self.demo is None or self.state.running:
            return
        wanted = {"source": source_modality, "reference": target_modality}
        changed = {role: key for role, key in wanted.items() if role in self.demo and self.demo[role] != key}
        if changed:
            self.demo.update(changed)  # at once: the state change this causes must not load it twice
            self._spawn(self._load_demo(changed))

    def upload_chunk(self, role: str, files: list[dict]) -> None:
        """Collect the chunks of an upload; the empty chunk that ends it starts reading and checking."""
        if files:
            self._chunks[role].extend(files)
            return
        files, self._chunks[role] = self._chunks[role], []
        self._spawn(self._read_upload(role, files))

    @reported
    async def _read_upload(self, role: str, files: list[dict]) -> None:
        with self.state:
            self.state.status = f"reading the {role} volume"
        try:
            with tempfile.TemporaryDirectory(prefix="medtrans-upload-") as folder:
                upload = await asyncio.to_thread(read_upload, files, folder, self.limits)
        finally:
            with self.state:
                self.state.uploading = ""
        description = f"{upload.name} {upload.info.series_description or ''}"
        array = sitk.GetArrayViewFromImage(upload.image)
        with self.state:
            if role == "reference":
                self._add_reference(upload, description, array)
            elif role == "extra":
                guess = guessModality(description, upload.info.dicom_modality, array)
                self._add_extra_source(upload, guess)
            else:
                modality = guessModality(description, upload.info.dicom_modality, array) or self.state.source_modality
                self._add_source(upload, modality)

    def _add_source(self, upload, modality: str) -> None:
        previous = self.names.get("source")
        if self.demo is not None:
            self.demo.pop("source", None)
        self.origin["source"] = ORIGIN_UPLOAD
        self._add_volume("source", upload.image, upload.name, modality, upload.info.metadata)
        self.source_replaced(upload.name, previous)
        self.state.status = f"ready: {upload.name} loaded as the source ({presenting.modality_word(modality)})"

    def _add_reference(self, upload, description: str, array) -> None:
        """A reference is checked against the source before it replaces the old one: no overlap, no load."""
        target = self.state.target_modality
        modality, named = guess_reference_modality(description, upload.info.dicom_modality, array, target)
        node = self._make_node(upload.image, upload.name, upload.info.metadata)
        refusal, warnings = self.check_reference(node)
        if refusal:
            self._remove_node(node)
            self.report_error(f"{refusal} (the reference was not loaded)")
            return
        if self.demo is not None:
            self.demo.pop("reference", None)
        self.origin["reference"] = ORIGIN_UPLOAD
        self.reference_named, self.reference_explicit, self.reference_checked = named, False, tuple(warnings)
        self.reference_for = self.names.get("source")
        self._add_volume("reference", upload.image, upload.name, modality, node=node)
        self.refresh_reference_warnings()
        self.reference_changed()
        self.state.status = f"ready: {upload.name} loaded as the reference ({presenting.modality_word(modality)})"

    # -- additional sources (other sequences of the same patient, for models that take several) --------------

    def _add_extra_source(self, upload, guess: str | None) -> None:
        taken = {self.state.source_modality, *(e["modality"] for e in self.state.extra_sources)}
        modality = presenting.extra_source_modality(guess, taken, self.state.target_modality)
        node = self._make_node(upload.image, upload.name, upload.info.metadata)
        extra_id, self._next_extra = self._next_extra, self._next_extra + 1
        self.extras[extra_id] = node
        info = presenting.volume_size(upload.name, upload.image)
        entry = {"id": extra_id, "name": upload.name, "modality": modality, "info": info}
        self.state.extra_sources = [*self.state.extra_sources, entry]
        word = presenting.modality_word(modality)
        self.state.status = f"ready: {upload.name} added as an additional source ({word})"
        self.request_preflight()

    def set_extra_modality(self, extra_id: int, modality: str) -> None:
        presenting.modality_word(modality)  # a known key
        self.state.extra_sources = [
            {**e, "modality": modality} if e["id"] == extra_id else e for e in self.state.extra_sources
        ]
        self.request_preflight()

    def remove_extra_source(self, extra_id: int) -> None:
        if self.state.running:
            return
        self._remove_node(self.extras.pop(extra_id, None))
        self.state.extra_sources = [e for e in self.state.extra_sources if e["id"] != extra_id]
        self.request_preflight()

    def _extra_source_rows(self) -> list[tuple[str, object]]:
        """``(modality, node)`` of every added source, in the order added (the logic refuses bad rows)."""
        return [(e["modality"], self.extras[e["id"]]) for e in self.state.extra_sources if e["id"] in self.extras]
