"""Translate, cancel, show the result and its comparison with the reference, download: the web app's run part.

Mixed into :class:`MedTransWeb.webapp.MedTransWebApp`. Inference runs in a background process started by
``MedTransLogic.translateAsync`` and is polled from the server's event loop, so the page stays live and Cancel works.
"""

from __future__ import annotations

import asyncio
import time

from MedTransCore.errors import MedTransError
from MedTransCore.modalities import get_modality

from . import presenting
from .downloads import download_names, synthetic_file
from .guard_rails import CANCEL_GRACE_S
from .reporting import error_text, reported
from .slicer_logic import results, volumes
from .views import ShownVolume

POLL_SECONDS = 0.1
RESULT_NODES = ("syntheticNode", "differenceNode", "uncertaintyNode", "metricsTableNode", "transformNode")
COMPARISON_NODES = ("differenceNode", "metricsTableNode")


class TranslationMixin:
    """The run and its result (see the module)."""

    def translate_or_cancel(self) -> None:
        """Translate, or Cancel the run in flight, but not within :data:`CANCEL_GRACE_S` of Translate: the second
        click of a double click (or a click the page sent before it knew a run had started) is ignored."""
        if self.state.running or self.run is not None:
            if time.monotonic() - self.translate_clicked < CANCEL_GRACE_S:
                return
            if self.run is not None:
                self.run.cancel()
        elif "source" not in self.nodes:
            self.report_error("load a volume first (demo phantom or upload)")
        else:
            self.translate_clicked = time.monotonic()
            self.state.update({"running": True, "cancel_ready": False})  # at once: no second run
            self._spawn(self._translate())

    @reported
    async def _translate(self) -> None:
        try:
            with self.state:
                preflight = self.refresh_preflight(even_while_running=True)
                if preflight is not None and preflight.refusal:
                    raise MedTransError(preflight.refusal)
                model = None if self.state.model == presenting.AUTO_MODEL else self.state.model
                target, reference = self.state.target_modality, self.compared_reference()
                self.clear_result()
                self.state.update({"progress": 0.0, "status": "starting"})
            await self._run(model, target, reference)
        finally:
            self.run = None
            with self.state:
                self.state.update({"running": False, "cancel_ready": False})
                self.request_preflight()

    async def _run(self, model: str | None, target: str, reference) -> None:
        started = time.monotonic()
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
                if not self.state.cancel_ready and time.monotonic() - self.translate_clicked >= CANCEL_GRACE_S:
                    self.state.cancel_ready = True
                if self.run.poll():
                    break
            await asyncio.sleep(POLL_SECONDS)
        with self.state:
            self._on_run_ended(self.run, time.monotonic() - started, reference)

    def _on_progress(self, fraction: float, message: str) -> None:
        self.state.progress = fraction
        self.state.status = f"running {100 * fraction:.0f}% · {message}"

    def _on_run_ended(self, run, seconds: float, reference) -> None:
        if run.state == "cancelled":
            self.state.update({"status": "cancelled: nothing was added", "progress": 0.0})
            return
        if run.state == "failed":
            self.state.update({"status": f"error: {error_text(run.error)}", "progress": 0.0})
            return
        self.outputs = outputs = run.outputs
        self.reference_was_changed = False
        settings = outputs.settings
        target = settings["target_modality"]
        names = download_names(settings)
        self.state.update(
            {
                "has_result": True,
                "results_open": True,
                "has_difference": outputs.differenceNode is not None,
                "result_is_ct": get_modality(target).is_ct,
                "warnings": list(outputs.warnings),
                "result_summary": presenting.result_summary(settings),
                "limitations": outputs.limitations,
                "download_name_nifti": names["nifti"],
                "download_name_dicom": names["dicom"],
                "status": f"done in {seconds:.1f} s · synthetic {target} by {settings['model']} on {settings['device']}",
            }
        )
        self._show_result(outputs, reference)

    def _show_result(self, outputs, reference) -> None:
        """The logic lays the result out (source | synthetic + difference | reference); then captions, windows."""
        target = outputs.settings["target_modality"]
        self.logic.showResults(outputs, self.nodes["source"], reference)
        self._show_difference()
        array = volumes.arrayFromVolume(outputs.syntheticNode)
        self.views.track("synthetic", ShownVolume.of(outputs.syntheticNode, target, array), self.state.window_preset)
        if outputs.metricsTableNode is not None:
            metrics = results.metricsFromTable(outputs.metricsTableNode)
            baselines = outputs.baselineMetrics or results.baselinesFromTable(outputs.metricsTableNode) or None
            self.state.update(
                {
                    "metrics": presenting.metric_rows(metrics, target, baselines),
                    "metric_columns": presenting.baseline_columns(baselines),
                    "baseline_losses": self.comparison_warnings(metrics, baselines, target),
                }
            )
        self.update_metrics_note()
        if self.state.show_3d:
            self._on_threed_toggled(True)
        self._refresh_captions()
        self.views.annotate_all()

    def _show_difference(self) -> None:
        outputs = self.outputs
        if outputs is None:
            return
        unit = get_modality(outputs.settings["target_modality"]).unit
        shown = bool(self.state.show_difference) and outputs.differenceNode is not None
        self.views.set_difference(outputs.syntheticNode, outputs.differenceNode, shown, unit)

    def clear_result(self) -> None:
        """Remove the synthetic volume and everything made with it; the page says there is no result."""
        self.clear_dose()
        if self.outputs is not None:
            self.views.show("synthetic", None)
            self.views.set_threed(bool(self.state.show_3d), None)
            self.views.set_difference(None, None, False)
            for name in RESULT_NODES:
                self._remove_node(getattr(self.outputs, name))
        closed = {"results_open": False} if self.outputs is not None else {}  # nothing left to show in it
        self.outputs = None
        self.reference_was_changed = False
        self.state.update({**presenting.empty_result(), "progress": 0.0, **closed})
        self.update_metrics_note()
        self._refresh_captions()

    def clear_comparison(self) -> None:
        """Remove the difference map and the metrics of the result (made with a reference that is gone)."""
        outputs = self.outputs
        if outputs is None:
            return
        self.clear_dose()  # computed against the reference that is gone
        losses = set(self.state.baseline_losses)
        for name in COMPARISON_NODES:
            self._remove_node(getattr(outputs, name))
            setattr(outputs, name, None)
        outputs.metrics, outputs.baselineMetrics = None, None
        self.views.set_difference(outputs.syntheticNode, None, False)
        self.state.update(
            {
                "has_difference": False,
                "show_difference": False,
                "metrics": [],
                "metric_columns": [],
                "baseline_losses": [],
                "warnings": [w for w in self.state.warnings if w not in losses],
            }
        )

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
        if self.dose_run is not None:
            self.dose_run.cancel()
        self.slicer.io_manager.cache_dir.cleanup()
