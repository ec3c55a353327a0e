"""The page's dose check: plan on the reference CT, recompute on the synthetic CT, show gamma and DVH.

Mixed into :class:`MedTransWeb.webapp.MedTransWebApp`. ``MedTransLogic.doseCheckAsync`` runs ``medtrans dose`` in a
background process that is polled from the server's event loop, like a translation, so the page stays live and the
dose check can be cancelled. The dose belongs to the result it was computed on: a new result or a removed
reference clears it.
"""

from __future__ import annotations

import asyncio
import html

from .reporting import error_text, reported

POLL_SECONDS = 0.1
DOSE_NODES = (
    "ctDoseNode",
    "sctDoseNode",
    "differenceNode",
    "gammaNode",
    "structuresNode",
    "passRateTableNode",
    "dvhMetricsTableNode",
    "dvhTableNode",
    "dvhChartNode",
)
#: The DVH chart's drawing area (SVG user units) and its margins for the axes.
CHART_W, CHART_H, CHART_LEFT, CHART_BOTTOM = 320.0, 170.0, 34.0, 22.0
COLOURS = ("#ef5350", "#42a5f5", "#66bb6a", "#ab47bc", "#ffa726", "#26c6da")


def empty_dose() -> dict:
    """The dose part of the state when no dose was computed."""
    return {
        "dose_running": False,
        "dose_progress": 0.0,
        "dose_status": "",
        "dose_rates": [],
        "dose_dvh": [],
        "dose_svg": "",
        "dose_test_plan": False,
        "show_dose": False,  # the sCT dose as a colour wash over the synthetic view
        "show_gamma": False,  # the 2%/2mm gamma map over the synthetic view
    }


def initial_dose_state() -> dict:
    return {"dose_beams": 7, "dose_prescription": 60.0, "dose_grid": 3.0, **empty_dose()}


def rate_rows(summary: dict) -> list[dict]:
    """``[{"criterion", "text", "value"}]`` of the gamma pass rates."""
    return [{"criterion": k, "text": f"{v:.1f} %", "value": v} for k, v in summary["gamma_pass_rate"].items()]


def dvh_rows(summary: dict) -> list[dict]:
    """One row per structure and metric: CT, sCT and their difference in Gy, as text."""
    return [
        {
            "key": f"{structure} {metric}",
            "structure": structure,
            "metric": metric,
            "ct": f"{value['ct']:.2f}",
            "sct": f"{value['sct']:.2f}",
            "difference": f"{value['difference']:+.2f}",
        }
        for structure, metrics in summary["dvh"].items()
        for metric, value in metrics.items()
    ]


def dvh_svg(columns: dict[str, list[float]]) -> str:
    """The DVH table (``{"Dose (Gy)": [...], "<structure> CT (%)": [...], ...}``) as an SVG chart: one polyline
    per column (one colour per structure, the sCT's dashed), the axes and their end labels."""
    doses = columns["Dose (Gy)"]
    top = max(doses[-1], 1e-6)
    x0, y0 = CHART_LEFT, CHART_H - CHART_BOTTOM
    width, height = CHART_W - CHART_LEFT - 6, CHART_H - CHART_BOTTOM - 6
    parts = [
        f'<svg viewBox="0 0 {CHART_W:g} {CHART_H:g}" class="mt-dvh" role="img" aria-label="dose-volume histograms">',
        f'<line class="mt-axis" x1="{x0}" y1="{y0}" x2="{x0 + width}" y2="{y0}"/>',
        f'<line class="mt-axis" x1="{x0}" y1="{y0}" x2="{x0}" y2="{y0 - height}"/>',
        f'<text x="2" y="{y0 - height + 3}">100 %</text><text x="{x0 - 8}" y="{y0 + 12}">0</text>',
        f'<text x="{x0 + width - 34}" y="{y0 + 12}">{top:.0f} Gy</text>',
    ]
    structures: list[str] = []
    for name, volumes in columns.items():
        if name == "Dose (Gy)":
            continue
        structure = name.rsplit(" ", 2)[0]
        if structure not in structures:
            structures.append(structure)
        points = " ".join(f"{x0 + width * d / top:.1f},{y0 - height * v / 100:.1f}" for d, v in zip(doses, volumes))
        colour = COLOURS[structures.index(structure) % len(COLOURS)]
        dash = ' stroke-dasharray="4 3"' if name.endswith("sCT (%)") else ""
        parts.append(
            f'<polyline data-curve="{html.escape(name)}" fill="none" stroke="{colour}" stroke-width="1.5"{dash} '
            f'points="{points}"><title>{html.escape(name)}</title></polyline>'
        )
    for index, structure in enumerate(structures):
        colour = COLOURS[index % len(COLOURS)]
        parts.append(
            f'<text x="{x0 + 8}" y="{y0 - height + 12 + 11 * index}" fill="{colour}">{html.escape(structure)}</text>'
        )
    return "".join(parts) + "</svg>"


def table_columns(table) -> dict[str, list[float]]:
    """The numeric columns of an MRML table node, by title."""
    return {
        table.GetColumnName(c): [float(table.GetCellText(r, c)) for r in range(table.GetNumberOfRows())]
        for c in range(table.GetNumberOfColumns())
    }


class DoseMixin:
    """The dose check of the result (see the module)."""

    dose_run = None
    dose_outputs = None

    def dose_or_cancel(self) -> None:
        """Compute the dose of the result, or cancel the dose check in flight."""
        if self.dose_run is not None:
            self.dose_run.cancel()
            return
        if self.state.running:
            self.report_error("wait for the translation to end")
        elif self.outputs is None or self.compared_reference() is None:
            self.report_error("the dose check needs a synthetic CT and the reference CT it was compared with")
        else:
            self.state.update({"dose_running": True, "dose_status": "starting", "dose_progress": 0.0})
            self._spawn(self._dose())

    @reported
    async def _dose(self) -> None:
        try:
            with self.state:
                self.clear_dose()
                self.state.dose_running = True
            self.dose_run = run = self.logic.doseCheckAsync(
                self.compared_reference(),
                self.outputs.syntheticNode,
                beams=int(self.state.dose_beams),
                prescription=float(self.state.dose_prescription),
                doseGrid=float(self.state.dose_grid),
                progress=self._on_dose_progress,
            )
            while True:
                with self.state:
                    if run.poll():
                        break
                await asyncio.sleep(POLL_SECONDS)
            with self.state:
                self._on_dose_ended(run)
        finally:
            self.dose_run = None
            with self.state:
                self.state.dose_running = False

    def _on_dose_progress(self, fraction: float, message: str) -> None:
        self.state.dose_progress = fraction
        self.state.dose_status = f"dose check {100 * fraction:.0f}% · {message}"

    def _on_dose_ended(self, run) -> None:
        if run.state == "cancelled":
            self.state.update({"dose_status": "dose check cancelled: nothing was added", "dose_progress": 0.0})
            return
        if run.state == "failed":
            self.state.update({"dose_status": f"dose check failed: {error_text(run.error)}", "dose_progress": 0.0})
            return
        self.dose_outputs = outputs = run.outputs
        seconds = sum(outputs.summary.get("seconds", {}).values())
        self.state.update(
            {
                "dose_rates": rate_rows(outputs.summary),
                "dose_dvh": dvh_rows(outputs.summary),
                "dose_svg": dvh_svg(table_columns(outputs.dvhTableNode)),
                "dose_test_plan": bool(outputs.summary["plan"]["test_plan"]),
                "dose_status": f"dose computed in {seconds:.0f} s · {outputs.summary['plan']['engine']}",
                "dose_progress": 1.0,
            }
        )

    def on_dose_toggled(self, show_dose: bool, **_) -> None:
        """The dose wash, the gamma map and the difference overlay share the synthetic view's label layer."""
        self._toggle_overlay("show_dose", show_dose)

    def on_gamma_toggled(self, show_gamma: bool, **_) -> None:
        self._toggle_overlay("show_gamma", show_gamma)

    def _toggle_overlay(self, name: str, shown: bool) -> None:
        if self.dose_outputs is None:
            return
        if shown:  # one overlay at a time: the others are switched off
            self.state.update(
                {other: False for other in ("show_difference", "show_dose", "show_gamma") if other != name}
            )
        if name == "show_dose":
            self.views.set_dose(self.dose_outputs.sctDoseNode, bool(shown))
        else:
            self.views.set_gamma(self.dose_outputs.gammaNode, bool(shown))

    def clear_dose(self) -> None:
        """Remove the dose nodes and results (they belong to the result they were computed on)."""
        if self.dose_run is not None:
            self.dose_run.cancel()
        if self.dose_outputs is not None:
            self.views.set_dose(self.dose_outputs.sctDoseNode, False)  # before their nodes go
            self.views.set_gamma(self.dose_outputs.gammaNode, False)
            chart = self.dose_outputs.dvhChartNode
            series = [chart.GetNthPlotSeriesNode(i) for i in range(chart.GetNumberOfPlotSeriesNodes())]
            for node in [*series, *(getattr(self.dose_outputs, name) for name in DOSE_NODES)]:
                self._remove_node(node)
        self.dose_outputs = None
        self.state.update(empty_dose())
