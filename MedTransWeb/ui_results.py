"""The page's display controls and its results panel (collapsible): what was made, how good it is, downloads.

The metrics table puts the model next to the two baselines computed the same way against the same reference
(the source as is, and histogram matching); a model that does worse than one is marked by a chip over the table,
its rows highlighted, and the logic's warning.
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_server import Server

CSS = """
.mt-metrics { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: .8rem; }
.mt-metrics th, .mt-metrics td { padding: 3px 5px; border-bottom: 1px solid rgba(255,255,255,.12); }
.mt-metrics th { text-align: left; font-weight: 500; }
.mt-metrics thead th { font-size: .7rem; opacity: .8; text-align: right; vertical-align: bottom; }
.mt-metrics thead th:first-child { text-align: left; }
.mt-metrics td.mt-value { text-align: right; font-weight: 600; }
.mt-metrics td.mt-baseline { text-align: right; opacity: .8; }
.mt-metrics td.mt-unit { opacity: .7; }
.mt-metrics tr.mt-worse { background: rgba(244, 67, 54, .18); }
.mt-metrics tr.mt-worse td.mt-value { color: #ff8a80; }
.mt-controls-hint { opacity: .7; }
"""
CONTROLS_HINT = "In a view: drag = window/level · right drag = zoom · middle drag = pan · wheel = slices (all linked)."


def display_section(reset_views) -> None:
    html.Div("3 · Display", classes="mt-section")
    v3.VSelect(
        label="Window / level",
        v_model=("window_preset",),
        items=("window_items",),
        density="compact",
        variant="outlined",
        hide_details=True,
        classes="mb-1",
        raw_attrs=['data-testid="window-preset"'],
    )
    html.Div(CONTROLS_HINT, classes="text-caption mt-controls-hint mb-1")
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
        click=reset_views,
        raw_attrs=['data-testid="reset-views"'],
    )


def results_section(server: Server, download_nifti, download_dicom) -> None:
    with html.Div(classes="d-flex align-center"):
        html.Div("4 · Results", classes="mt-section flex-grow-1")
        v3.VBtn(
            icon="mdi-chevron-right",
            size="small",
            variant="text",
            title="Collapse the results panel",
            click="results_open = false",
            raw_attrs=['data-testid="results-collapse"'],
        )
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
    _metrics_table()
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
            click=download.format(kind="nifti", trigger=server.trigger_name(download_nifti)),
            raw_attrs=['data-testid="download-nifti"'],
        )
        v3.VBtn(
            "DICOM (zip)",
            prepend_icon="mdi-download",
            variant="tonal",
            v_if=("result_is_ct",),
            disabled=("!has_result",),
            click=download.format(kind="dicom", trigger=server.trigger_name(download_dicom)),
            raw_attrs=['data-testid="download-dicom"'],
        )


def _metrics_table() -> None:
    v3.VChip(
        "Worse than a baseline on this case",
        v_if=("baseline_losses.length",),
        color="error",
        variant="flat",
        size="small",
        prepend_icon="mdi-alert-octagon-outline",
        classes="mb-2",
        raw_attrs=['data-testid="baseline-chip"', ":title=\"baseline_losses.join('\\n')\""],
    )
    with html.Table(v_if=("metrics.length",), classes="mt-metrics mb-2", raw_attrs=['data-testid="metrics-table"']):
        with html.Thead(), html.Tr():
            html.Th("Metric")
            html.Th("Model")
            html.Th("{{ column }}", v_for="column in metric_columns", key="column")
            html.Th("")
        with html.Tbody():
            with html.Tr(
                v_for="row in metrics",
                key="row.name",
                classes=("row.worse ? 'mt-worse' : ''",),
                raw_attrs=[':data-metric="row.name"', ':data-worse="row.worse"'],
            ):
                html.Th("{{ row.label }}", raw_attrs=[':title="row.help"'])
                html.Td("{{ row.text }}", classes="mt-value", raw_attrs=[':data-value="row.value"'])
                html.Td(
                    "{{ b.text }}",
                    v_for="b in row.baselines",
                    key="b.name",
                    classes="mt-baseline",
                    raw_attrs=[':data-baseline="b.name"', ':data-value="b.value"'],
                )
                html.Td("{{ row.unit }}", classes="mt-unit")


def demo_dialog(confirm_demo) -> None:
    """Asks before the demo replaces a result (the server opens it: ``confirm_demo``)."""
    with (
        v3.VDialog(v_model=("confirm_demo",), max_width=440, persistent=True),
        v3.VCard(
            title="Replace the result with the demo?",
            raw_attrs=['data-testid="demo-dialog"'],
        ),
    ):
        v3.VCardText(
            "Loading the demo phantom removes the synthetic volume, its difference map and metrics, and replaces "
            "the source and the reference. Download the result first if you need it."
        )
        with v3.VCardActions():
            v3.VSpacer()
            v3.VBtn(
                "Keep the result",
                variant="text",
                click=(confirm_demo, "[false]"),
                raw_attrs=['data-testid="demo-dialog-cancel"'],
            )
            v3.VBtn(
                "Load the demo",
                color="warning",
                variant="flat",
                click=(confirm_demo, "[true]"),
                raw_attrs=['data-testid="demo-dialog-confirm"'],
            )
