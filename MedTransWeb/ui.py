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

from .uploads import VOLUME_SUFFIXES

ACCEPT = ",".join((*VOLUME_SUFFIXES, ".zip", ".dcm"))
SYNTHETIC_NOTICE = "Synthetic images are computed by a model: for research and planning support, not for diagnosis."

CSS = """
html { overflow-y: auto; }
.mt-panel { font-size: 0.875rem; }
.mt-section { font-weight: 600; letter-spacing: .04em; text-transform: uppercase; font-size: .75rem;
  opacity: .8; margin: 14px 0 6px; }
.mt-view-caption { position: absolute; top: 6px; left: 40px; right: 8px; display: flex; flex-direction: column;
  align-items: center; pointer-events: none; }
.mt-view-title { padding: 2px 10px; border-radius: 4px; font: 600 13px sans-serif; color: #fff;
  background: rgba(0,0,0,.65); border: 1px solid #90a4ae; max-width: 100%; text-align: center; }
.mt-view-subtitle { margin-top: 3px; padding: 1px 8px; border-radius: 4px; font: 12px sans-serif; color: #eceff1;
  background: rgba(0,0,0,.55); max-width: 100%; text-align: center; }
.mt-view-title-synthetic { border-color: #ff9800; color: #ffb74d; }
.mt-view-title-reference { border-color: #66bb6a; }
.layout-grid-item:has(.mt-view-title-synthetic) { border: 2px solid #ff9800 !important; }
.mt-view-hint { position: absolute; top: 50%; left: 50%; transform: translate(-50%, -50%); color: #b0bec5;
  font: 14px sans-serif; text-align: center; pointer-events: none; max-width: 80%; }
.mt-metrics { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
.mt-metrics th, .mt-metrics td { padding: 3px 6px; border-bottom: 1px solid rgba(255,255,255,.12); }
.mt-metrics th { text-align: left; font-weight: 500; }
.mt-metrics td.mt-value { text-align: right; font-weight: 600; }
.mt-metrics td.mt-unit { opacity: .7; }
.mt-status { min-height: 1.4em; word-break: break-word; }
"""


@dataclass
class PageCallbacks:
    """What the page's controls call on the server."""

    load_demo: Callable[[], None]
    upload_chunk: Callable[[str, list[dict]], None]  # (role, files); an empty list ends an upload
    set_extra_modality: Callable[[int, str], None]  # (id of an added source, modality key)
    remove_extra_source: Callable[[int], None]  # (id of an added source)
    translate_or_cancel: Callable[[], None]
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
        prepend_icon=icon,
        classes="mb-2",
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
    _upload_button(server, "source", "Upload volume", "mdi-upload", callbacks)
    _upload_button(server, "extra", "Add source (another sequence)", "mdi-plus", callbacks)
    _upload_button(server, "reference", "Upload reference (optional)", "mdi-upload-outline", callbacks)
    html.Div(
        "NIfTI, NRRD, MHA, or a zipped DICOM series. Added sources are other sequences of the same patient for "
        "models that take several; the reference is the real target scan, for metrics.",
        classes="text-caption text-medium-emphasis mb-1",
    )
    html.Div("{{ source_info }}", classes="text-caption", raw_attrs=['data-testid="source-info"'])
    _extra_sources_list(callbacks)
    html.Div("{{ reference_info }}", classes="text-caption", raw_attrs=['data-testid="reference-info"'])


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


def _translation_section(callbacks: PageCallbacks) -> None:
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
    v3.VBtn(
        "{{ running ? 'Cancel' : 'Translate' }}",
        block=True,
        size="large",
        color=("running ? 'error' : 'success'",),
        prepend_icon=("running ? 'mdi-stop' : 'mdi-play'",),
        disabled=("!running && (!has_source || !!uploading || !model_items.length)",),
        click=callbacks.translate_or_cancel,
        raw_attrs=['data-testid="translate-button"'],
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


def _display_section(callbacks: PageCallbacks) -> None:
    html.Div("3 · Display", classes="mt-section")
    v3.VSelect(
        label="Window / level (CT)",
        v_model=("window_preset",),
        items=("window_items",),
        density="compact",
        variant="outlined",
        hide_details=True,
        classes="mb-1",
        raw_attrs=['data-testid="window-preset"'],
    )
    v3.VSwitch(
        label="Difference overlay (synthetic − reference)",
        v_model=("show_difference",),
        disabled=("!has_difference",),
        color="warning",
        density="compact",
        hide_details=True,
        raw_attrs=['data-testid="difference-toggle"'],
    )
    v3.VSwitch(
        label="3D view of the synthetic volume",
        v_model=("show_3d",),
        disabled=("!has_result",),
        color="primary",
        density="compact",
        hide_details=True,
        raw_attrs=['data-testid="threed-toggle"'],
    )
    v3.VBtn(
        "Reset views",
        size="small",
        variant="text",
        prepend_icon="mdi-fit-to-screen-outline",
        click=callbacks.reset_views,
    )


def _results_section(server: Server, callbacks: PageCallbacks) -> None:
    html.Div("4 · Results", classes="mt-section")
    html.Div("{{ result_summary }}", classes="text-caption mb-2", raw_attrs=['data-testid="result-summary"'])
    with v3.VAlert(
        v_if=("limitations",),
        type="info",
        variant="tonal",
        density="compact",
        title="Model limitations",
        classes="mb-2 text-caption",
        raw_attrs=['data-testid="limitations"'],
    ):
        html.Div("{{ limitations }}")
    with v3.VAlert(
        v_if=("warnings.length",),
        type="warning",
        variant="tonal",
        density="compact",
        title="Warnings",
        classes="mb-2 text-caption",
        raw_attrs=['data-testid="warnings"'],
    ):
        html.Div("{{ w }}", v_for="w in warnings", key="w")
    with html.Table(classes="mt-metrics mb-2", raw_attrs=['data-testid="metrics-table"']):
        with html.Tr(v_for="row in metrics", key="row.name", raw_attrs=[':data-metric="row.name"']):
            html.Th("{{ row.label }}")
            html.Td("{{ row.text }}", classes="mt-value", raw_attrs=[':data-value="row.value"', ':title="row.help"'])
            html.Td("{{ row.unit }}", classes="mt-unit")
    html.Div(
        "{{ metrics_note }}", classes="text-caption text-medium-emphasis mb-2", raw_attrs=['data-testid="metrics-note"']
    )
    download = "utils.download(download_name_{kind}, trigger('{trigger}'), 'application/octet-stream')"
    with html.Div(classes="d-flex ga-2"):
        v3.VBtn(
            "NIfTI",
            prepend_icon="mdi-download",
            variant="tonal",
            disabled=("!has_result",),
            click=download.format(kind="nifti", trigger=server.trigger_name(callbacks.download_nifti)),
            raw_attrs=['data-testid="download-nifti"'],
        )
        v3.VBtn(
            "DICOM (zip)",
            prepend_icon="mdi-download",
            variant="tonal",
            v_if=("result_is_ct",),
            disabled=("!has_result",),
            click=download.format(kind="dicom", trigger=server.trigger_name(callbacks.download_dicom)),
            raw_attrs=['data-testid="download-dicom"'],
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
        client.Style(CSS)
        with v3.VAppBar(density="compact", color="surface", border="b"):
            v3.VAppBarTitle("MedTrans · medical image translation")
            v3.VSpacer()
            v3.VChip(
                SYNTHETIC_NOTICE,
                color="warning",
                variant="tonal",
                size="small",
                prepend_icon="mdi-alert-outline",
                classes="mr-3",
            )
        with v3.VNavigationDrawer(permanent=True, width=340), html.Div(classes="pa-4 mt-panel"):
            _input_section(server, callbacks)
            _translation_section(callbacks)
            _display_section(callbacks)
        with v3.VNavigationDrawer(permanent=True, width=300, location="right"), html.Div(classes="pa-4 mt-panel"):
            _results_section(server, callbacks)
        with v3.VMain(), html.Div(style="height: 100%; display: flex;"):
            initialize_views(layout)
    return layout
