"""Driving the app's page in the browser tests: a page at a given screen size, uploads, runs, views, screenshots."""

from __future__ import annotations

import re
from collections.abc import Iterator

from playwright.sync_api import Page, expect

from .test_web_app import MEAN_BRIGHTNESS_JS, TRANSLATION_TIMEOUT_MS, view, view_image, wait_for_status

SIZES = ((1366, 768), (1920, 1080))
# Every remote image has the size of its view again (it is re-rendered after a resize).
IMAGES_FIT_JS = """() => [...document.querySelectorAll('img.image-display-area')].every(
  (img) => img.complete && img.naturalWidth > 0 && Math.abs(img.naturalWidth - img.clientWidth) <= 2)"""


def open_page(browser, web_server, size: tuple[int, int]) -> Iterator[Page]:
    """A page on the app at ``size`` (for a fixture: ``yield from open_page(...)``)."""
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(web_server.url)
    page.get_by_test_id("status").wait_for()
    yield page
    context.close()


def screenshots(page: Page, artifacts, step: str, focus=None) -> None:
    """Save the page at each size of :data:`SIZES` once its views are re-rendered (``focus``: a locator scrolled
    into the panel's view first); back to 1366x768 afterwards."""
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(500)
        page.wait_for_function(IMAGES_FIT_JS, timeout=30_000)
        if focus is not None:
            focus.scroll_into_view_if_needed()
        page.wait_for_timeout(700)  # the last frame of the remote views
        page.screenshot(path=str(artifacts / f"web_guard_{step}_{width}.png"))
    page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})


def upload(page: Page, role: str, path: str, status: str) -> None:
    page.get_by_test_id(f"upload-{role}").set_input_files(path)
    wait_for_status(page, re.escape(status))


def translate(page: Page) -> str:
    """Click Translate and return the status the run ends with."""
    before = page.get_by_test_id("status").inner_text()
    page.get_by_test_id("translate-button").click()
    expect(page.get_by_test_id("status")).not_to_have_text(before)
    return wait_for_status(page, "(done|error|cancelled)", timeout=TRANSLATION_TIMEOUT_MS)


def slider(page: Page, role: str):
    return view(page, role).locator(".v-slider-thumb")


def slider_value(page: Page, role: str) -> float:
    return float(slider(page, role).get_attribute("aria-valuenow"))


def slider_middle(page: Page, role: str) -> float:
    thumb = slider(page, role)
    return (float(thumb.get_attribute("aria-valuemin")) + float(thumb.get_attribute("aria-valuemax"))) / 2


def brightness(page: Page, role: str) -> float:
    return view_image(page, role).evaluate(MEAN_BRIGHTNESS_JS)


def drag(page: Page, role: str, dx: float, dy: float, button: str = "left") -> None:
    box = view(page, role).bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down(button=button)
    page.mouse.move(x + dx, y + dy, steps=12)
    page.mouse.up(button=button)
