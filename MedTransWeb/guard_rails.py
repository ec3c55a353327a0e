"""One coherent state, and the guard rails before a run: the part of the web app that decides, not what it shows.

Mixed into :class:`MedTransWeb.webapp.MedTransWebApp` (it uses the app's ``state``, ``logic``, ``views``, ``nodes``
and ``modalities``). The rules:

- Before a run, the Slicer logic's :meth:`~MedTransSlicerLib.MedTransLogic.preflight` is asked again whenever the
  source, a modality, the model, an added source or the reference changes: its refusal turns Translate off and is
  shown, its warnings are shown beside the input, and the model that will run is shown with its domain, intended
  use and limitations.
- The reference: its modality is guessed like the source's; a guess from the name or series description stands,
  a guess from the DICOM tag or the intensities only (CT-like or MR) follows the target modality, and the user's
  own choice always stands. One that does not overlap the source is refused; a different field of view is a
  warning.
- A new source clears the result. The demo's phantom reference is removed when a patient's volume becomes the
  source (it can never be that patient's scan); an uploaded reference is checked against the new source: removed
  when it does not overlap, flagged when it was uploaded for the source before.
- A new, removed or re-labelled reference clears the comparison made with the old one (difference map, metrics,
  baseline warnings); the synthetic volume stays, and one note says what happened.
- Cancel is ignored for :data:`CANCEL_GRACE_S` after Translate (a double click on Translate must not cancel), on
  the server, whatever the page does.
"""

from __future__ import annotations

import asyncio

from MedTransCore.errors import MedTransError

from . import presenting
from .reporting import logger
from .slicer_logic import guessModality, results

CANCEL_GRACE_S = 1.0
ORIGIN_DEMO, ORIGIN_UPLOAD = "demo", "upload"


def guess_reference_modality(description: str, dicom_modality: str | None, array, target: str) -> tuple[str, bool]:
    """The modality of an uploaded reference and whether its name/description said it (``named``).

    Args:
        description: file name and series description.
        dicom_modality: the DICOM Modality tag, if any.
        array: the voxels (negative air: CT-like, else MR).
        target: the chosen target modality (a reference is normally a scan of it).
    """
    named = guessModality(description) is not None
    guess = guessModality(description, dicom_modality, array) or target
    return presenting.followed_reference_modality(guess, target, named=named, explicit=False), named


class GuardRailsMixin:
    """Preflight, the reference's rules and the cancel grace of the web app (see the module)."""

    # -- preflight -----------------------------------------------------------------------------------------------

    def request_preflight(self) -> None:
        """Ask the logic again once the current batch of changes is done (one preflight per batch)."""
        if getattr(self, "_preflight_pending", False):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop yet (the app is being built): at once
            self.refresh_preflight()
            return
        self._preflight_pending = True
        loop.call_soon(self._run_pending_preflight)

    def _run_pending_preflight(self) -> None:
        self._preflight_pending = False
        with self.state:
            self.refresh_preflight()

    def refresh_preflight(self, *, even_while_running: bool = False):
        """Ask :meth:`MedTransLogic.preflight` about the inputs now and show its answer; returns it (``None``
        without a source, or while a run is in flight unless ``even_while_running``: the run's own check)."""
        if self.state.running and not even_while_running:
            return None
        source = self.nodes.get("source")
        if source is None:
            self.state.update({"refusal": "", "model_card": {}, "input_warnings": []})
            return None
        model = None if self.state.model == presenting.AUTO_MODEL else self.state.model
        try:
            result = self.logic.preflight(
                source,
                self.state.source_modality,
                self.state.target_modality,
                model=model,
                referenceNode=self.compared_reference(),
                extraSources=self._extra_source_rows(),
            )
        except Exception as error:  # noqa: BLE001 - it never raises for a user's choice; a bug must not break the page
            logger.exception("preflight failed")
            message = str(error) if isinstance(error, MedTransError) else f"unexpected {type(error).__name__}: {error}"
            self.state.update({"refusal": f"the inputs could not be checked: {message}", "model_card": {}})
            return None
        shown_beside_reference = set(self.reference_checked)
        self.state.update(
            {
                "refusal": result.refusal,
                "model_card": presenting.model_card(result),
                "input_warnings": [w for w in result.warnings if w not in shown_beside_reference],
            }
        )
        return result

    # -- the reference -------------------------------------------------------------------------------------------

    def compared_reference(self):
        """The reference node when it is a scan of the target modality (the one a run compares with), else None."""
        if "reference" in self.nodes and self.modalities.get("reference") == self.state.target_modality:
            return self.nodes["reference"]
        return None

    def check_reference(self, node) -> tuple[str, tuple[str, ...]]:
        """``(refusal, warnings)`` of ``node`` as the reference of the current source (none yet: nothing to say)."""
        source = self.nodes.get("source")
        if source is None:
            return "", ()
        return self.logic.checkReference(node, source)

    def refresh_reference_warnings(self) -> None:
        """What is shown beside the reference: the overlap check's warnings, and a modality other than the target."""
        warnings = list(self.reference_checked)
        modality, target = self.modalities.get("reference"), self.state.target_modality
        if "reference" in self.nodes and modality != target:
            warnings.append(
                f"The reference is {presenting.modality_word(modality)} and the target "
                f"{presenting.modality_word(target)}: it will not be compared with the result (change its "
                "modality if this is wrong)."
            )
        self.state.reference_warnings = warnings

    def set_reference_modality(self, modality: str) -> None:
        """The user's choice of the reference's modality: it stands from now on (the target no longer moves it)."""
        presenting.modality_word(modality)  # a known key
        if "reference" not in self.nodes or self.state.running or modality == self.modalities.get("reference"):
            return
        self.reference_explicit = True
        self.relabel_reference(modality)

    def relabel_reference(self, modality: str) -> None:
        """Give the reference ``modality``: its label, window, caption and warnings follow; the old comparison goes."""
        self.modalities["reference"] = modality
        self.state.reference_modality = modality
        self.show_volume("reference")
        self.update_info("reference")
        self.refresh_reference_warnings()
        self.reference_changed()

    def follow_target(self, target: str) -> None:
        """A reference whose modality was only guessed from its kind (CT-like or MR) takes the new target's."""
        if "reference" not in self.nodes or self.origin.get("reference") == ORIGIN_DEMO:
            return
        current = self.modalities["reference"]
        followed = presenting.followed_reference_modality(
            current, target, named=self.reference_named, explicit=self.reference_explicit
        )
        if followed != current:
            self.relabel_reference(followed)
        else:
            self.refresh_reference_warnings()

    def remove_reference(self, note: str = "") -> None:
        """Remove the reference (the page's button, or a rule); ``note`` says why beside the reference."""
        if self.state.running or "reference" not in self.nodes:
            return
        self._remove_node(self.nodes.pop("reference"))
        self.modalities.pop("reference", None)
        self.origin.pop("reference", None)
        if self.demo is not None:
            self.demo.pop("reference", None)
        self.reference_checked = ()
        self.views.show("reference", None)
        self.state.update({"has_reference": False, "reference_info": "", "reference_note": note})
        self.refresh_reference_warnings()
        self.reference_changed()

    def source_replaced(self, name: str, previous_source: str | None) -> None:
        """The rules for the reference when a patient's volume ``name`` became the source (replacing
        ``previous_source``, or none)."""
        if "reference" not in self.nodes:
            return
        reference = self.nodes["reference"]
        if self.origin.get("reference") == ORIGIN_DEMO:
            self.remove_reference(f"The demo phantom's reference was removed: it is not a scan of {name}.")
            return
        refusal, warnings = self.check_reference(reference)
        if refusal:
            self.remove_reference(f"The reference was removed: {refusal}.")
            return
        self.reference_checked = tuple(warnings)
        note = ""
        if previous_source is not None and self.reference_for == previous_source:
            note = (
                f"This reference was uploaded for the previous source ({previous_source}): make sure it is a scan "
                f"of the same patient as {name}, or remove it."
            )
        self.reference_for = name
        self.state.reference_note = note
        self.refresh_reference_warnings()

    def reference_changed(self) -> None:
        """The reference is not the one the result was compared with: clear that comparison, say so once."""
        if self.outputs is not None:
            self.clear_comparison()
            self.reference_was_changed = True
        self.update_metrics_note()
        self._refresh_captions()
        self.request_preflight()

    def update_metrics_note(self) -> None:
        outputs = self.outputs
        target = outputs.settings["target_modality"] if outputs is not None else self.state.target_modality
        self.state.metrics_note = presenting.metrics_note(
            target,
            compared=outputs is not None and outputs.metricsTableNode is not None,
            reference_modality=self.modalities.get("reference") if "reference" in self.nodes else None,
            reference_changed=self.reference_was_changed,
            has_result=outputs is not None,
        )

    def comparison_warnings(self, metrics: dict, baselines: dict | None, target: str) -> list[str]:
        """The "does worse than a baseline" lines for this result (the logic's rule, so both front ends agree)."""
        if not baselines:
            return []
        return results.baselineWarnings(metrics, baselines, target)
