"""What the page draws over each remote view: caption, empty-view hint, patient directions, slice number, colour bar.

Everything here is HTML bound to state that :class:`MedTransWeb.views.ComparisonViews` keeps current
(``view_titles``, ``view_subtitles``, ``view_hints``, ``view_annotations`` keyed by view tag, and
``difference_bar``); the remote image underneath stays VTK's.
"""

from __future__ import annotations

from trame.widgets import html
from trame_server import Server
from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui, create_vertical_view_gutter_ui
from trame_slicer.views import AbstractView, SliceView

CSS = """
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
.mt-orient { position: absolute; color: #ffe082; font: 600 13px sans-serif; pointer-events: none;
  text-shadow: 0 0 3px #000, 0 0 3px #000; }
.mt-orient-left { left: 36px; top: 50%; transform: translateY(-50%); }
.mt-orient-right { right: 8px; top: 50%; transform: translateY(-50%); }
.mt-orient-top { top: 58px; left: 50%; transform: translateX(-50%); }
.mt-orient-bottom { bottom: 60px; left: 50%; transform: translateX(-50%); }
.mt-slice-text { position: absolute; right: 8px; bottom: 40px; color: #eceff1; font: 12px sans-serif;
  pointer-events: none; text-shadow: 0 0 3px #000, 0 0 3px #000; font-variant-numeric: tabular-nums; }
.mt-colour-bar { position: absolute; left: 8px; top: 96px; display: flex;
  align-items: stretch; gap: 4px; pointer-events: none; font: 11px sans-serif; color: #eceff1;
  text-shadow: 0 0 3px #000; }
.mt-colour-bar-ramp { width: 10px; height: 110px; border: 1px solid #90a4ae;
  background: linear-gradient(to bottom, #ff0000, rgba(255,255,255,0) 50%, #0000ff); }
.mt-colour-bar-labels { display: flex; flex-direction: column; justify-content: space-between; }
"""
EDGES = ("left", "right", "top", "bottom")


def view_overlay(server: Server, view_id: str, view: AbstractView, role: str) -> None:
    """Gutter (reset camera, slice slider) plus caption, hint and, on slice views, directions and slice number."""
    if isinstance(view, SliceView):
        create_vertical_slice_view_gutter_ui(server, view_id, view)
    else:
        create_vertical_view_gutter_ui(server, view_id, view)
    with html.Div(classes=f"mt-view-caption mt-view-caption-{role}"):
        html.Div(
            f"{{{{ view_titles['{view_id}'] }}}}",
            classes=f"mt-view-title mt-view-title-{role}",
            raw_attrs=[f'data-testid="view-title-{role}"'],
        )
        html.Div(
            f"{{{{ view_subtitles['{view_id}'] }}}}",
            v_if=(f"view_subtitles['{view_id}']",),
            classes="mt-view-subtitle",
            raw_attrs=[f'data-testid="view-subtitle-{role}"'],
        )
    html.Div(f"{{{{ view_hints['{view_id}'] }}}}", v_if=(f"view_hints['{view_id}']",), classes="mt-view-hint")
    if not isinstance(view, SliceView):
        return
    annotation = f"view_annotations['{view_id}']"
    with html.Div(v_if=(f"{annotation} && {annotation}.shown",), raw_attrs=[f'data-testid="annotations-{role}"']):
        for edge in EDGES:
            html.Div(
                f"{{{{ {annotation}.{edge} }}}}",
                classes=f"mt-orient mt-orient-{edge}",
                raw_attrs=[f'data-testid="orientation-{role}-{edge}"'],
            )
        html.Div(
            f"{{{{ {annotation}.slice }}}}", classes="mt-slice-text", raw_attrs=[f'data-testid="slice-text-{role}"']
        )
    if role == "synthetic":
        _colour_bar()


def _colour_bar() -> None:
    """The difference overlay's scale: red above, transparent at 0, blue below, in the target's unit."""
    with html.Div(v_if=("difference_bar.unit",), classes="mt-colour-bar", raw_attrs=['data-testid="colour-bar"']):
        html.Div(classes="mt-colour-bar-ramp")
        with html.Div(classes="mt-colour-bar-labels"):
            html.Div("{{ difference_bar.high }}")
            html.Div("0 {{ difference_bar.unit }}")
            html.Div("{{ difference_bar.low }}")
