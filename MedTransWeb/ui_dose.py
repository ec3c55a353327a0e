"""The results panel's dose check: plan on the reference CT, recompute on the synthetic CT, gamma and DVH.

Shown once a synthetic CT was compared with a reference CT (the physicist's question: would a plan on this sCT
deliver the dose it promises?).
"""

from __future__ import annotations

from trame.widgets import html
from trame.widgets import vuetify3 as v3

CSS = """
.mt-dvh { width: 100%; height: auto; background: rgba(255,255,255,.03); }
.mt-dvh text { fill: currentColor; font-size: 9px; opacity: .8; }
.mt-dvh .mt-axis { stroke: currentColor; stroke-opacity: .4; stroke-width: 1; }
"""
AVAILABLE = "has_result && result_is_ct && has_difference"


def dose_section(dose_or_cancel) -> None:
    with html.Div(v_if=(AVAILABLE,), raw_attrs=['data-testid="dose-section"']):
        html.Div("5 · Dose check", classes="mt-section mt-3")
        html.Div(
            "A photon plan optimised on the reference CT, its fluence recomputed on the synthetic CT (pyRadPlan); "
            "gamma and DVH say how far the doses differ.",
            classes="text-caption text-medium-emphasis mb-2",
        )
        with html.Div(classes="d-flex ga-2 mb-2"):
            _number("Beams", "dose_beams", 1, 36, 1, "dose-beams")
            _number("Dose (Gy)", "dose_prescription", 1, 100, 1, "dose-prescription")
            _number("Grid (mm)", "dose_grid", 1, 10, 0.5, "dose-grid")
        v3.VBtn(
            "{{ dose_running ? 'Cancel dose check' : 'Compute dose' }}",
            prepend_icon=("dose_running ? 'mdi-stop' : 'mdi-radioactive'",),
            color=("dose_running ? 'error' : 'primary'",),
            variant="tonal",
            block=True,
            disabled=("running",),
            click=dose_or_cancel,
            raw_attrs=['data-testid="dose-button"'],
        )
        v3.VProgressLinear(
            v_if=("dose_running",), model_value=("dose_progress * 100",), color="primary", classes="mt-1"
        )
        html.Div("{{ dose_status }}", classes="text-caption mb-2", raw_attrs=['data-testid="dose-status"'])
        v3.VChip(
            "Test plan: a sphere at the body's centre",
            v_if=("dose_test_plan",),
            color="warning",
            variant="flat",
            size="small",
            classes="mb-2",
            raw_attrs=[
                'data-testid="dose-test-plan"',
                'title="No target was given: a spherical test target, not a clinical plan"',
            ],
        )
        _rates()
        _overlay_switch("Dose wash on the synthetic view (sCT dose, from 10 % of its maximum)", "show_dose", "primary")
        _overlay_switch(
            "Gamma 2%/2mm on the synthetic view (green: pass, yellow to red: fail)", "show_gamma", "success"
        )
        _dvh_chart()
        _dvh_table()


def _number(label: str, name: str, low: float, high: float, step: float, testid: str) -> None:
    v3.VTextField(
        label=label,
        v_model_number=(name,),
        type="number",
        min=low,
        max=high,
        step=step,
        density="compact",
        variant="outlined",
        hide_details=True,
        disabled=("dose_running || running",),
        raw_attrs=[f'data-testid="{testid}"'],
    )


def _overlay_switch(label: str, name: str, colour: str) -> None:
    """A switch of one of the synthetic view's overlays (``show_dose`` -> ``data-testid="dose-toggle"``)."""
    v3.VSwitch(
        label=label,
        v_if=("dose_rates.length",),
        v_model=(name,),
        color=colour,
        density="compact",
        hide_details=True,
        raw_attrs=[f'data-testid="{name.removeprefix("show_")}-toggle"'],
    )


def _rates() -> None:
    with html.Table(v_if=("dose_rates.length",), classes="mt-metrics mb-2", raw_attrs=['data-testid="dose-rates"']):
        with html.Thead(), html.Tr():
            html.Th("Gamma (global, 10 % threshold)")
            html.Th("Pass rate")
        with html.Tbody(), html.Tr(v_for="r in dose_rates", key="r.criterion"):
            html.Th("{{ r.criterion }}")
            html.Td("{{ r.text }}", classes="mt-value", raw_attrs=[':data-value="r.value"'])


def _dvh_chart() -> None:
    with html.Div(v_if=("dose_svg",), classes="mb-2", raw_attrs=['data-testid="dose-dvh-chart"']):
        html.Div(v_html=("dose_svg",))  # made by the server from the DVH table (dose_check.dvh_svg), names escaped
        html.Div(
            "Cumulative DVH: volume (%) receiving at least each dose; solid CT, dashed synthetic CT.",
            classes="text-caption text-medium-emphasis",
        )


def _dvh_table() -> None:
    with html.Table(v_if=("dose_dvh.length",), classes="mt-metrics mb-2", raw_attrs=['data-testid="dose-dvh"']):
        with html.Thead(), html.Tr():
            for title in ("Structure", "", "CT (Gy)", "sCT (Gy)", "sCT − CT"):
                html.Th(title)
        with html.Tbody(), html.Tr(v_for="d in dose_dvh", key="d.key"):
            html.Th("{{ d.structure }}")
            html.Td("{{ d.metric }}")
            html.Td("{{ d.ct }}", classes="mt-baseline")
            html.Td("{{ d.sct }}", classes="mt-baseline")
            html.Td("{{ d.difference }}", classes="mt-value")
