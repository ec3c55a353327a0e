"""The page: a control panel (input, translation, display, results) beside the comparison views.

Only layout and bindings live here; every action calls back into :class:`MedTransWeb.app.MedTransWebApp`.
Elements that scripts and tests drive carry a stable ``data-testid``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_server import Server

from .ui_dose import CSS as DOSE_CSS
from .ui_dose import dose_section
from .ui_results import CSS as RESULTS_CSS
from .ui_results import demo_dialog, display_section, results_section
from .uploads import VOLUME_SUFFIXES
from .view_overlays import CSS as VIEW_CSS

ACCEPT = ",".join((*VOLUME_SUFFIXES, ".zip", ".dcm"))
SYNTHETIC_NOTICE = "Synthetic images are computed by a model: for research and planning support, not for diagnosis."

CSS = """
html { overflow-y: auto; }
.mt-panel { font-size: 0.875rem; }
.mt-section { font-weight: 600; letter-spacing: .04em; text-transform: uppercase; font-size: .75rem;
  opacity: .8; margin: 14px 0 6px; }
.mt-status { min-height: 1.4em; word-break: break-word; }
.mt-refusal .v-alert__content { max-height: 9.5em; overflow-y: auto; }
.mt-model-card { border: 1px solid rgba(255,255,255,.15); border-radius: 6px; padding: 6px 8px; }
.mt-model-card details summary { cursor: pointer; opacity: .85; }
"""


@dataclass
class PageCallbacks:
    """What the page's controls call on the server."""

    load_demo: Callable[[], None]
    confirm_demo: Callable[[bool], None]  # the dialog's answer (True: replace the result with the demo)
    upload_chunk: Callable[[str, list[dict]], None]  # (role, files); an empty list ends an upload
    set_extra_modality: Callable[[int, str], None]  # (id of an added source, modality key)
    remove_extra_source: Callable[[int], None]  # (id of an added source)
    set_reference_modality: Callable[[str], None]  # the user's choice of the reference's modality
    remove_reference: Callable[[], None]
    translate_or_cancel: Callable[[], None]
    dose_or_cancel: Callable[[], None]
    download_nifti: Callable[[], object]
    download_dicom: Callable[[], object]
    reset_views: Callable[[], None]


def _upload_button(server: Server, role: str, label: str, icon: str, callbacks: PageCallbacks) -> None:
    """A button opening the file dialog; files go to the server in chunks (trame-slicer's chunk loader)."""
    trigger = server.trigger_name(lambda files, role=role: callbacks.upload_chunk(role, files))
    on_change = (
        "const files = $event.target.files;"
        "if (!files || !files.length) return;"
        "let total = 0; for (const f of files) total += f.size;"
        "if (total > max_upload_bytes) {"
        "  status = `error: the upload is larger than the server's limit of ${max_upload_bytes / 1048576} MB`;"
        "  $event.target.value = ''; return; }"
        f"uploading = '{role}';"
        f"window.load_files_by_chunks(files, {{ trigger_name: '{trigger}' }})"
        ".finally(() => { $event.target.value = ''; });"
    )
    with v3.VBtn(
        tag="label",
        block=True,
        variant="tonal",
        size="small",
        prepend_icon=icon,
        classes="mb-1",
        disabled=("running || !!uploading",),
        loading=(f"uploading === '{role}'",),
    ):
        html.Span(label)
        html.Input(
            type="file",
            accept=ACCEPT,
            multiple=True,
            style="display: none",
            change=on_change,
            raw_attrs=[f'data-testid="upload-{role}"'],
        )


def _input_section(server: Server, callbacks: PageCallbacks) -> None:
    html.Div("1 · Input volume", classes="mt-section")
    v3.VBtn(
        "Load demo phantom",
        block=True,
        color="primary",
        variant="flat",
        prepend_icon="mdi-head-snowflake-outline",
        classes="mb-2",
        click=callbacks.load_demo,
        disabled=("running || !!uploading",),
        raw_attrs=['data-testid="load-demo"'],
    )
    demo_dialog(callbacks.confirm_demo)
    _upload_button(server, "source", "Upload volume", "mdi-upload", callbacks)
    _upload_button(server, "extra", "Add a sequence (source)", "mdi-plus", callbacks)
    _upload_button(server, "reference", "Upload reference (optional)", "mdi-upload-outline", callbacks)
    html.Div(
        "NIfTI, NRRD, MHA or a zipped DICOM series. A sequence: another scan of the same patient, for models that "
        "take several; the reference: the real target scan, for metrics.",
        classes="text-caption text-medium-emphasis mb-1",
    )
    html.Div("{{ source_info }}", classes="text-caption", raw_attrs=['data-testid="source-info"'])
    _warning_list("input_warnings", "input-warnings", "About the source")
    _extra_sources_list(callbacks)
    _reference_row(callbacks)


def _warning_list(variable: str, test_id: str, title: str, kind: str = "warning") -> None:
    with v3.VAlert(
        v_if=(f"{variable}.length",),
        type=kind,
        variant="tonal",
        density="compact",
        title=title,
        classes="my-1 text-caption",
        raw_attrs=[f'data-testid="{test_id}"'],
    ):
        html.Div("{{ w }}", v_for=f"w in {variable}", key="w")


def _reference_row(callbacks: PageCallbacks) -> None:
    """The reference: its modality (guessed, changeable), name and size, a remove button, its checks."""
    html.Div("{{ reference_info }}", classes="text-caption mt-1", raw_attrs=['data-testid="reference-info"'])
    with html.Div(v_if=("has_reference",), classes="d-flex align-center ga-1 my-1"):
        v3.VSelect(
            label="Reference modality",
            model_value=("reference_modality",),
            items=("modality_items",),
            update_modelValue=(callbacks.set_reference_modality, "[$event]"),
            disabled=("running",),
            density="compact",
            variant="outlined",
            hide_details=True,
            raw_attrs=['data-testid="reference-modality"'],
        )
        v3.VBtn(
            icon="mdi-close",
            size="small",
            variant="text",
            title="Remove the reference",
            click=callbacks.remove_reference,
            disabled=("running",),
            raw_attrs=['data-testid="remove-reference"'],
        )
    html.Div(
        "{{ reference_note }}",
        v_if=("reference_note",),
        classes="text-caption text-info my-1",
        raw_attrs=['data-testid="reference-note"'],
    )
    _warning_list("reference_warnings", "reference-warnings", "About the reference")


def _extra_sources_list(callbacks: PageCallbacks) -> None:
    """One row per added source: its modality (changeable), its name and size, and a remove button."""
    with html.Div(
        v_for="extra in extra_sources",
        key="extra.id",
        classes="d-flex align-center ga-1 my-1",
        raw_attrs=['data-testid="extra-source"', ':data-modality="extra.modality"'],
    ):
        v3.VSelect(
            model_value=("extra.modality",),
            items=("modality_items",),
            item_title="value",
            update_modelValue=(callbacks.set_extra_modality, "[extra.id, $event]"),
            disabled=("running",),
            density="compact",
            variant="outlined",
            hide_details=True,
            style="flex: 0 0 150px",
            raw_attrs=['data-testid="extra-source-modality"'],
        )
        html.Div("{{ extra.info }}", classes="text-caption flex-grow-1", style="min-width: 0")
        v3.VBtn(
            icon="mdi-close",
            size="x-small",
            variant="text",
            title="Remove this source",
            click=(callbacks.remove_extra_source, "[extra.id]"),
            disabled=("running",),
            raw_attrs=['data-testid="remove-extra-source"'],
        )


def _translation_section(server: Server, callbacks: PageCallbacks) -> None:
    translate = server.trigger_name(callbacks.translate_or_cancel)
    html.Div("2 · Translation", classes="mt-section")
    common = {"density": "compact", "variant": "outlined", "hide_details": True, "classes": "mb-3"}
    v3.VSelect(
        label="Source modality",
        v_model=("source_modality",),
        items=("modality_items",),
        disabled=("running",),
        raw_attrs=['data-testid="source-modality"'],
        **common,
    )
    v3.VSelect(
        label="Target modality",
        v_model=("target_modality",),
        items=("modality_items",),
        disabled=("running",),
        raw_attrs=['data-testid="target-modality"'],
        **common,
    )
    v3.VSelect(
        label="Model",
        v_model=("model",),
        items=("model_items",),
        disabled=("running",),
        raw_attrs=['data-testid="model"'],
        **common,
    )
    with v3.VAlert(
        v_if=("has_source && refusal",),
        type="error",
        variant="tonal",
        density="compact",
        classes="mb-2 text-caption mt-refusal",
        raw_attrs=['data-testid="refusal"'],
    ):
        html.Div("Translate is off: {{ refusal }}")
    html.Div(
        "⚠ {{ input_warnings.length }} warning{{ input_warnings.length > 1 ? 's' : '' }} about the source: "
        "see 1 · Input",
        v_if=("has_source && input_warnings.length",),
        classes="text-caption text-warning mb-1",
        raw_attrs=['data-testid="input-warnings-summary"'],
    )
    v3.VBtn(
        "{{ running ? 'Cancel' : 'Translate' }}",
        block=True,
        size="large",
        color=("running ? 'error' : 'success'",),
        prepend_icon=("running ? 'mdi-stop' : 'mdi-play'",),
        disabled=("running ? !cancel_ready : (!has_source || !!uploading || !model_items.length || !!refusal)",),
        click=f"trigger('{translate}')",
        # The server action it sends: what a second click sends, whatever the button shows by then.
        raw_attrs=['data-testid="translate-button"', f'data-trigger="{translate}"'],
    )
    v3.VProgressLinear(
        model_value=("progress * 100",),
        color=("status.startsWith('error') ? 'error' : 'success'",),
        height=6,
        rounded=True,
        classes="mt-3 mb-1",
        raw_attrs=['data-testid="progress"'],
    )
    html.Div(
        "{{ status }}",
        classes=("status.startsWith('error') ? 'mt-status text-error' : 'mt-status'",),
        raw_attrs=['data-testid="status"', 'role="status"', 'aria-live="polite"'],
    )
    _model_card()


def _model_card() -> None:
    """The model that will run (the automatic choice or the one named): its domain, intended use, limitations."""
    with html.Div(
        v_if=("model_card.title",), classes="mt-model-card my-2 text-caption", raw_attrs=['data-testid="model-card"']
    ):
        html.Div("{{ model_card.title }}", classes="font-weight-bold", raw_attrs=['data-testid="model-card-title"'])
        html.Div("{{ model_card.domain }}", v_if=("model_card.domain",))
        html.Div("{{ model_card.input }}", v_if=("model_card.input",))
        with html.Details(v_if=("model_card.use || model_card.limitations",), classes="mt-1"):
            html.Summary("Intended use and limitations")
            html.Div("Intended use: {{ model_card.use }}", v_if=("model_card.use",), classes="mt-1")
            html.Div(
                "Limitations: {{ model_card.limitations }}",
                v_if=("model_card.limitations",),
                classes="mt-1",
                raw_attrs=['data-testid="model-card-limitations"'],
            )


def build_page(server: Server, initialize_views: Callable[[VAppLayout], None], callbacks: PageCallbacks) -> VAppLayout:
    """Build the page and return its layout.

    Args:
        server: the trame server.
        initialize_views: places the view grid in the main area (``LayoutManager.initialize_layout_grid``).
        callbacks: the server actions.
    """
    with VAppLayout(server, full_height=True) as layout:
        layout.root.theme = "dark"
        client.Style(CSS + VIEW_CSS + RESULTS_CSS + DOSE_CSS)
        with v3.VAppBar(density="compact", color="surface", border="b"):
            v3.VAppBarTitle("MedTrans · medical image translation")
            v3.VSpacer()
            v3.VChip(
                SYNTHETIC_NOTICE,
                color="warning",
                variant="tonal",
                size="small",
                prepend_icon="mdi-alert-outline",
                classes="mr-2 text-truncate",
                style="max-width: 40vw",
                title=SYNTHETIC_NOTICE,
            )
            v3.VBtn(
                "Results",
                prepend_icon=("results_open ? 'mdi-chevron-right' : 'mdi-chart-box-outline'",),
                variant=("results_open ? 'text' : 'tonal'",),
                color=("baseline_losses.length ? 'error' : (has_result ? 'success' : '')",),
                click="results_open = !results_open",
                classes="mr-2",
                raw_attrs=['data-testid="results-toggle"'],
            )
        with v3.VNavigationDrawer(permanent=True, width=300), html.Div(classes="pa-3 mt-panel"):
            _input_section(server, callbacks)
            _translation_section(server, callbacks)
            display_section(callbacks.reset_views)
        with (
            v3.VNavigationDrawer(v_model=("results_open",), permanent=True, width=380, location="right"),
            html.Div(classes="pa-3 mt-panel", raw_attrs=['data-testid="results-panel"']),
        ):
            results_section(server, callbacks.download_nifti, callbacks.download_dicom)
            dose_section(callbacks.dose_or_cancel)
        with v3.VMain(), html.Div(style="height: 100%; display: flex;"):
            initialize_views(layout)
    return layout
