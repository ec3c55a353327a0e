"""The browser's dose check (issue 12), end to end in Debian's chromium: after a synthetic CT was compared with
the reference CT, Compute dose plans on the reference, recomputes on the synthetic CT and shows gamma pass rates, a
DVH chart and DVH metrics; a removed reference takes the dose with it. Screenshots: ``Testing/artifacts/web_guard_dose_*``.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .browsing import screenshots, translate
from .test_web_app import load_demo, view_image, wait_for_image, wait_until_rendered

pytestmark = pytest.mark.slow
DOSE_TIMEOUT_MS = 240_000
# The share of a view's pixels that are strongly coloured (the grey CT has none).
COLOURED_JS = """(img) => { const c = document.createElement('canvas'); c.width = img.naturalWidth;
  c.height = img.naturalHeight; const x = c.getContext('2d'); x.drawImage(img, 0, 0);
  const d = x.getImageData(0, 0, c.width, c.height).data; let n = 0;
  for (let i = 0; i < d.length; i += 4) if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 80) n++;
  return n / (d.length / 4); }"""


def test_a_synthetic_ct_compared_with_its_reference_gets_a_dose_check_with_gamma_and_dvh(page, artifacts):
    load_demo(page)
    expect(page.get_by_test_id("dose-section")).to_have_count(0)  # nothing to check before a result
    assert translate(page).startswith("done")
    section = page.get_by_test_id("dose-section")
    expect(section).to_be_visible()
    expect(page.get_by_test_id("dose-button")).to_have_text("Compute dose")
    for testid, value in (("dose-beams", "3"), ("dose-grid", "5")):
        page.get_by_test_id(testid).locator("input").fill(value)
    page.get_by_test_id("dose-button").click()
    expect(page.get_by_test_id("dose-button")).to_have_text("Cancel dose check")
    rates = page.get_by_test_id("dose-rates")
    expect(rates).to_be_visible(timeout=DOSE_TIMEOUT_MS)
    expect(page.get_by_test_id("dose-status")).to_contain_text("dose computed")
    values = [
        float(v) for v in rates.locator("td[data-value]").evaluate_all("cells => cells.map(c => c.dataset.value)")
    ]
    assert len(values) == 3 and 0 <= values[0] <= values[1] <= values[2] <= 100
    expect(rates).to_contain_text("2%/2mm")
    expect(page.get_by_test_id("dose-test-plan")).to_be_visible()
    expect(page.get_by_test_id("dose-dvh").locator("tbody tr")).to_have_count(10)  # 5 metrics of TARGET and BODY
    curves = page.get_by_test_id("dose-dvh-chart").locator("polyline")
    expect(curves).to_have_count(4)
    assert curves.first.get_attribute("data-curve") == "TARGET CT (%)"
    expect(page.get_by_test_id("dose-button")).to_have_text("Compute dose")
    wait_until_rendered(page, "synthetic")
    assert view_image(page, "synthetic").evaluate(COLOURED_JS) < 0.001  # a grey CT before the wash
    page.get_by_test_id("dose-toggle").locator("input").check()
    wait_for_image(page, "synthetic", COLOURED_JS, lambda share: share > 0.05, "the dose wash")
    screenshots(page, artifacts, "dose", focus=page.get_by_test_id("dose-dvh-chart"))
    page.get_by_test_id("gamma-toggle").locator("input").check()  # one overlay at a time
    expect(page.get_by_test_id("dose-toggle").locator("input")).not_to_be_checked()
    green = COLOURED_JS.replace(
        "Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 80",
        "d[i + 1] - Math.max(d[i], d[i + 2]) > 40",
    )
    wait_for_image(page, "synthetic", green, lambda share: share > 0.05, "the gamma map (passing: green)")
    page.get_by_test_id("difference-toggle").locator("input").check()
    expect(page.get_by_test_id("gamma-toggle").locator("input")).not_to_be_checked()
    expect(page.get_by_test_id("colour-bar")).to_be_visible()
    page.get_by_test_id("difference-toggle").locator("input").uncheck()


def test_removing_the_reference_removes_its_dose_check(page):
    expect(page.get_by_test_id("dose-rates")).to_be_visible()  # the dose of the test before
    page.get_by_test_id("remove-reference").click()
    expect(page.get_by_test_id("dose-section")).to_have_count(0)
    expect(page.get_by_test_id("dose-rates")).to_have_count(0)
