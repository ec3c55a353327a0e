"""``MedTransWebApp``: the page's server side, trame-slicer views on an MRML scene and the Slicer module's logic.

Every action runs on the server's event loop; inference runs in a background process started by
``MedTransLogic.translateAsync`` and is polled from the loop, so the page stays live and Cancel works.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
import time
from collections.abc import Callable

import SimpleITK as sitk
from trame.app import TrameApp
from trame_server import Server
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import SlicerApp

from MedTransCore.errors import MedTransError
from MedTransCore.modalities import get_modality

from . import presenting
from .downloads import download_names, synthetic_file
from .rendering import configure_headless_rendering, is_software_renderer, opengl_renderer
from .slicer_logic import MedTransLogic, guessModality, results, volumes
from .ui import PageCallbacks, build_page
from .uploads import UploadLimits, read_upload
from .views import ComparisonViews, ShownVolume

logger = logging.getLogger("MedTransWeb")
POLL_SECONDS = 0.1
# The demo: the head phantom of the core; CBCT -> CT first, any other modality on demand.
DEMO = {"anatomy": "head", "seed": 0, "shape": (64, 64, 64), "spacing": (3.0, 3.0, 3.0)}
RESULT_NODES = ("syntheticNode", "differenceNode", "uncertaintyNode", "metricsTableNode", "transformNode")


def reported(handler: Callable) -> Callable:
    """Run a page action so that any failure becomes an ``error: ...`` status line, never a dead server."""

    @functools.wraps(handler)
    async def wrapper(self: MedTransWebApp, *args, **kwargs):
        try:
            return await handler(self, *args, **kwargs)
        except MedTransError as error:
            self.report_error(str(error))
        except Exception as error:  # noqa: BLE001 - a bug must not take the server down: log it, show it
            logger.exception("unexpected failure in %s", handler.__name__)
            self.report_error(f"unexpected {type(error).__name__}: {error}")
        return None

    return wrapper


class MedTransWebApp(TrameApp):
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
        self.extras: dict[int, object] = {}  # id of an added source -> its volume node (state.extra_sources: the rest)
        self._next_extra = 1
        self.demo: dict[str, str] | None = None  # role -> phantom modality while the demo is shown
        self.outputs = None  # TranslationOutputs of the last successful run
        self.run = None  # TranslationRun in flight
        self._chunks: dict[str, list[dict]] = {"source": [], "reference": [], "extra": []}
        self._tasks: set[asyncio.Task] = set()
        self.state.update(presenting.initial_state(self.limits.max_bytes))
        callbacks = PageCallbacks(
            load_demo=self.load_demo,
            upload_chunk=self.upload_chunk,
            set_extra_modality=self.set_extra_modality,
            remove_extra_source=self.remove_extra_source,
            translate_or_cancel=self.translate_or_cancel,
            download_nifti=functools.partial(self.download, dicom=False),
            download_dicom=functools.partial(self.download, dicom=True),
            reset_views=self.views.reset,
        )
        self.ui = build_page(self.server, self.views.layout_manager.initialize_layout_grid, callbacks)
        self.state.change("source_modality", "target_modality")(self._on_pair_changed)
        self.state.change("window_preset")(lambda window_preset, **_: self.views.apply_window(window_preset))
        self.state.change("show_difference")(self._on_difference_toggled)
        self.state.change("show_3d")(self._on_threed_toggled)
        self._on_pair_changed(self.state.source_modality, self.state.target_modality)

    # -- state helpers -----------------------------------------------------------------------------------

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
            reference_modality=self.modalities.get("reference"),
            settings=outputs.settings if outputs is not None else None,
            difference_span=span,
        )
        self.views.set_captions(captions)

    def _on_pair_changed(self, source_modality: str, target_modality: str, **_) -> None:
        bundles = self.logic.availableModels(source_modality, target_modality)
        self.state.model_items = presenting.model_items(bundles)
        if self.state.model not in [item["value"] for item in self.state.model_items]:
            self.state.model = presenting.AUTO_MODEL
        if not bundles and not self.state.running:
            self.state.status = f"no installed model translates {source_modality} to {target_modality}"
        self._refresh_captions()
        self._follow_demo(source_modality, target_modality)

    def _on_difference_toggled(self, show_difference: bool, **_) -> None:
        if self.outputs is not None:
            self.views.set_difference(self.outputs.syntheticNode, self.outputs.differenceNode, bool(show_difference))
            self._refresh_captions()

    def _on_threed_toggled(self, show_3d: bool, **_) -> None:
        outputs = self.outputs
        if outputs is None:
            self.views.set_threed(bool(show_3d), None)
            return
        is_ct = get_modality(outputs.settings["target_modality"]).is_ct
        self.views.set_threed(bool(show_3d), outputs.syntheticNode, is_ct)

    # -- loading -----------------------------------------------------------------------------------------

    def _add_volume(
        self, role: str, image: sitk.Image, name: str, modality: str, metadata: dict[str, str] | None = None
    ) -> None:
        """Replace the ``role`` volume by ``image`` and show it (a new source also clears the old result)."""
        if role == "source":
            self._clear_result()
        self._remove_node(self.nodes.pop(role, None))
        array = sitk.GetArrayFromImage(image)
        node = volumes.addVolumeNode(self.slicer.scene, array, volumes.ijkToRasFromImage(image), name)
        volumes.markPhantom(node, metadata if metadata is not None else image)
        self.nodes[role], self.modalities[role] = node, modality
        self.views.show(role, ShownVolume.of(node, modality, array), self.state.window_preset)
        label = f"{role.capitalize()} ({presenting.modality_word(modality)})"
        self.state[f"{role}_info"] = presenting.volume_info(label, name, image)
        if role == "source":
            self.state.update({"source_modality": modality, "has_source": True})
        self._refresh_captions()

    def load_demo(self) -> None:
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
                self._add_volume(role, case.images[modality], name, modality)
            if "reference" in modalities:
                self.state.target_modality = modalities["reference"]
            self.state.status = "ready: demo phantom loaded; press Translate"

    def _follow_demo(self, source_modality: str, target_modality: str) -> None:
        """With the demo loaded, show the phantom in the newly chosen source/target modality (any to any)."""
        if self.demo is None or self.state.running:
            return
        wanted = {"source": source_modality, "reference": target_modality}
        changed = {role: key for role, key in wanted.items() if self.demo.get(role) != key}
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
        if role == "reference":
            modality = self.state.target_modality  # the acquired scan of the target modality
        else:
            description = f"{upload.name} {upload.info.series_description or ''}"
            array = sitk.GetArrayViewFromImage(upload.image)
            modality = guessModality(description, upload.info.dicom_modality, array) or self.state.source_modality
        if role == "extra":
            with self.state:
                self._add_extra_source(upload, modality)
            return
        with self.state:
            self.demo = None
            self._add_volume(role, upload.image, upload.name, modality, upload.info.metadata)
            self.state.status = f"ready: {upload.name} loaded as the {role} ({presenting.modality_word(modality)})"

    # -- additional sources (other sequences of the same patient, for models that take several) ----------

    def _add_extra_source(self, upload, guess: str | None) -> None:
        taken = {self.state.source_modality, *(e["modality"] for e in self.state.extra_sources)}
        modality = presenting.extra_source_modality(guess, taken, self.state.target_modality)
        array = sitk.GetArrayFromImage(upload.image)
        node = volumes.addVolumeNode(self.slicer.scene, array, volumes.ijkToRasFromImage(upload.image), upload.name)
        volumes.markPhantom(node, upload.info.metadata)
        extra_id, self._next_extra = self._next_extra, self._next_extra + 1
        self.extras[extra_id] = node
        info = presenting.volume_size(upload.name, upload.image)
        entry = {"id": extra_id, "name": upload.name, "modality": modality, "info": info}
        self.state.extra_sources = [*self.state.extra_sources, entry]
        word = presenting.modality_word(modality)
        self.state.status = f"ready: {upload.name} added as an additional source ({word})"

    def set_extra_modality(self, extra_id: int, modality: str) -> None:
        presenting.modality_word(modality)  # a known key
        self.state.extra_sources = [
            {**e, "modality": modality} if e["id"] == extra_id else e for e in self.state.extra_sources
        ]

    def remove_extra_source(self, extra_id: int) -> None:
        if self.state.running:
            return
        self._remove_node(self.extras.pop(extra_id, None))
        self.state.extra_sources = [e for e in self.state.extra_sources if e["id"] != extra_id]

    def _extra_source_rows(self) -> list[tuple[str, object]]:
        """``(modality, node)`` of every added source, in the order added (the logic refuses bad rows)."""
        return [(e["modality"], self.extras[e["id"]]) for e in self.state.extra_sources if e["id"] in self.extras]

    # -- translation -------------------------------------------------------------------------------------

    def translate_or_cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()
        elif "source" not in self.nodes:
            self.report_error("load a volume first (demo phantom or upload)")
        elif not self.state.running:
            self.state.running = True  # at once: a second click must not start a second run
            self._spawn(self._translate())

    @reported
    async def _translate(self) -> None:
        model = None if self.state.model == presenting.AUTO_MODEL else self.state.model
        target = self.state.target_modality
        reference, notes = self.nodes.get("reference"), []
        if reference is not None and self.modalities["reference"] != target:
            reference = None
            notes.append(
                f"The reference is a {presenting.modality_word(self.modalities['reference'])}, not a "
                f"{presenting.modality_word(target)}: no difference map or metrics."
            )
        with self.state:
            self._clear_result()
            self.state.update({"progress": 0.0, "status": "starting", "warnings": notes})
        started = time.monotonic()
        try:
            self.run = self.logic.translateAsync(
                self.nodes["source"],
                self.state.source_modality,
                target,
                model=model,
                referenceNode=reference,
                progress=self._on_progress,
                extraSources=self._extra_source_rows(),
            )
            while True:
                with self.state:
                    if self.run.poll():
                        break
                await asyncio.sleep(POLL_SECONDS)
            with self.state:
                self._on_run_ended(self.run, time.monotonic() - started, reference)
        finally:
            self.run = None
            with self.state:
                self.state.running = False

    def _on_progress(self, fraction: float, message: str) -> None:
        self.state.progress = fraction
        self.state.status = f"running {100 * fraction:.0f}% · {message}"

    def _on_run_ended(self, run, seconds: float, reference) -> None:
        if run.state == "cancelled":
            self.state.update({"status": "cancelled: nothing was added", "progress": 0.0})
            return
        if run.state == "failed":
            error = run.error
            message = str(error) if isinstance(error, MedTransError) else f"{type(error).__name__}: {error}"
            self.state.update({"status": f"error: {message}", "progress": 0.0})
            return
        self.outputs = outputs = run.outputs
        settings = outputs.settings
        target = settings["target_modality"]
        self._show_result(outputs, reference)
        names = download_names(settings)
        self.state.update(
            {
                "has_result": True,
                "has_difference": outputs.differenceNode is not None,
                "result_is_ct": get_modality(target).is_ct,
                "warnings": [*self.state.warnings, *outputs.warnings],
                "result_summary": presenting.result_summary(settings),
                "limitations": outputs.limitations,
                "download_name_nifti": names["nifti"],
                "download_name_dicom": names["dicom"],
                "status": f"done in {seconds:.1f} s · synthetic {target} by {settings['model']} on {settings['device']}",
            }
        )

    def _show_result(self, outputs, reference) -> None:
        """The logic lays the result out (source | synthetic + difference | reference); then captions, windows."""
        target = outputs.settings["target_modality"]
        self.logic.showResults(outputs, self.nodes["source"], reference)
        self.views.set_difference(outputs.syntheticNode, outputs.differenceNode, bool(self.state.show_difference))
        array = volumes.arrayFromVolume(outputs.syntheticNode)
        self.views.track("synthetic", ShownVolume.of(outputs.syntheticNode, target, array), self.state.window_preset)
        if outputs.metricsTableNode is not None:
            metrics = results.metricsFromTable(outputs.metricsTableNode)
            self.state.metrics = presenting.metric_rows(metrics, target)
            self.state.metrics_note = (
                f"Synthetic vs acquired {presenting.modality_word(target)} inside the body (reference body mask)."
            )
        else:
            self.state.metrics_note = "No reference volume: upload one to compute metrics."
        if self.state.show_3d:
            self._on_threed_toggled(True)
        self._refresh_captions()

    def _clear_result(self) -> None:
        if self.outputs is not None:
            self.views.show("synthetic", None)
            self.views.set_threed(bool(self.state.show_3d), None)
            for name in RESULT_NODES:
                self._remove_node(getattr(self.outputs, name))
        self.outputs = None
        self.state.update({**presenting.empty_result(), "progress": 0.0})
        self._refresh_captions()

    def _remove_node(self, node) -> None:
        if node is None:
            return
        if hasattr(node, "GetNumberOfDisplayNodes"):
            for display in [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]:
                self.slicer.scene.RemoveNode(display)
        self.slicer.scene.RemoveNode(node)

    @reported
    async def download(self, *, dicom: bool):
        """The synthetic volume for the browser's download (NIfTI, or a zipped DICOM series for CT)."""
        if self.outputs is None:
            raise MedTransError("translate first: there is no synthetic volume to download")
        image = volumes.imageFromVolume(self.outputs.syntheticNode)
        content = await asyncio.to_thread(synthetic_file, image, self.outputs.settings, dicom=dicom)
        return self.server.protocol.addAttachment(content)

    def shutdown(self) -> None:
        """Cancel a translation in flight (its process tree is killed) and remove the app's temporary files."""
        if self.run is not None:
            self.run.cancel()
        self.slicer.io_manager.cache_dir.cleanup()
