"""Results a person can judge and views to judge them in (issue 10), end to end in Debian's chromium: the metrics
beside the baselines, a marked loss, the difference overlay with its colour bar, the views' directions, slice numbers
and linked zoom, a results panel that collapses at 1366x768. Screenshots: ``Testing/artifacts/web_guard_*``.

The server keeps one state for every page: these tests run in file order on one server.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .browsing import SIZES, drag, open_page, screenshots, slider, translate
from .test_web_app import (
    LIT_PIXELS_JS,
    choose,
    load_demo,
    view,
    view_image,
    wait_for_image,
    wait_until_rendered,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser, web_server):
    """A page on the app at 1366x768 (the small laptop screen the layout must work on)."""
    yield from open_page(browser, web_server, SIZES[0])


def test_the_metrics_sit_beside_the_baselines_and_a_model_that_loses_is_marked(page, artifacts):
    load_demo(page)
    choose(page, "model", "identity · identity")
    assert translate(page).startswith("done")

    table = page.get_by_test_id("metrics-table")
    expect(table.locator("thead")).to_contain_text("Source as is")
    expect(table.locator("thead")).to_contain_text("Histogram matching")
    mae = table.locator("tr[data-metric='MAE']")
    expect(mae.locator("td.mt-baseline")).to_have_count(2)
    # Identity is the CBCT as it is; histogram matching to the planning CT beats it on this phantom.
    expect(page.get_by_test_id("baseline-chip")).to_be_visible()
    expect(mae).to_have_attribute("data-worse", "true")
    expect(page.get_by_test_id("warnings")).to_contain_text("the model does worse than histogram matching")
    screenshots(page, artifacts, "results_baselines")


def test_the_difference_overlay_is_transparent_where_the_volumes_agree_and_has_a_colour_bar(page, artifacts):
    expect(page.get_by_test_id("download-nifti")).to_be_enabled()  # the identity result of the test before
    wait_until_rendered(page, "synthetic")
    # A patch of air inside the volume (the top left of the fitted square), away from the head.
    corner = """(img) => { const w = img.naturalWidth, h = img.naturalHeight, side = Math.min(w, h);
      const x0 = Math.round((w - side) / 2) + 4, y0 = Math.round((h - side) / 2) + 4;
      const c = document.createElement('canvas'); c.width = w; c.height = h; const x = c.getContext('2d');
      x.drawImage(img, 0, 0); const d = x.getImageData(x0, y0, 12, 12).data; let s = 0;
      for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2]; return s / (3 * 144); }"""
    air_before = view_image(page, "synthetic").evaluate(corner)
    toggle = page.get_by_test_id("difference-toggle").locator("input")
    toggle.check()
    bar = page.get_by_test_id("colour-bar")
    expect(bar).to_contain_text("0 HU")
    expect(bar).to_contain_text(re.compile(r"\+\d+ HU"))
    coloured = """(img) => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
      c.height = img.naturalHeight; const x = c.getContext('2d'); x.drawImage(img, 0, 0);
      const d = x.getImageData(0, 0, c.width, c.height).data; let n = 0;
      for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - d[i + 2]) > 80) n++; return n / (d.length / 4); }"""
    wait_for_image(page, "synthetic", coloured, lambda share: share > 0.005, "red and blue differences")
    assert view_image(page, "synthetic").evaluate(corner) == pytest.approx(air_before, abs=12)  # no tint on agreement
    screenshots(page, artifacts, "results_difference")
    toggle.uncheck()
    expect(bar).to_have_count(0)


def test_every_slice_view_names_its_directions_slice_and_position_and_zoom_is_linked(page, artifacts):
    load_demo(page)
    for role in ("source", "reference"):
        wait_until_rendered(page, role)
        for edge, letter in (("left", "R"), ("right", "L"), ("top", "A"), ("bottom", "P")):
            expect(page.get_by_test_id(f"orientation-{role}-{edge}")).to_have_text(letter)
        expect(page.get_by_test_id(f"slice-text-{role}")).to_have_text(re.compile(r"slice \d+/64 · [SI] \d+\.\d mm"))
    before = page.get_by_test_id("slice-text-reference").inner_text()
    slider(page, "source").press("ArrowRight")
    expect(page.get_by_test_id("slice-text-reference")).not_to_have_text(before)

    lit = view_image(page, "source").evaluate(LIT_PIXELS_JS)
    drag(page, "reference", 0, 120, button="right")  # zoom in the reference view: the source view follows
    wait_for_image(page, "source", LIT_PIXELS_JS, lambda share: share > 1.2 * lit, "the zoomed image")
    screenshots(page, artifacts, "views_annotations_zoom")


def settled_width(page) -> float:
    """The source view's width once two readings 0.3 s apart agree (layout transitions have ended)."""
    previous = -1.0
    for _ in range(40):
        current = view(page, "source").bounding_box()["width"]
        if current == previous:
            return current
        previous = current
        page.wait_for_timeout(300)
    return previous


def test_the_results_panel_collapses_so_the_views_grow_at_1366x768(page, artifacts):
    panel, toggle = page.get_by_test_id("results-panel"), page.get_by_test_id("results-toggle")
    if not panel.evaluate("e => e.getBoundingClientRect().left < window.innerWidth"):  # closed: no result now
        toggle.click()
    expect(panel).to_be_in_viewport()
    width = settled_width(page)  # the drawer slides in: measure once the views stopped shrinking
    toggle.click()
    expect(panel).not_to_be_in_viewport()
    grown = f"() => document.querySelector('.layout-grid-item').getBoundingClientRect().width > {width + 80}"
    page.wait_for_function(grown)
    assert view(page, "source").bounding_box()["width"] > width + 80
    screenshots(page, artifacts, "layout_results_collapsed")
    toggle.click()
    expect(panel).to_be_in_viewport()
