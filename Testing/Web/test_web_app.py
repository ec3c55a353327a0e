"""End to end: the browser app started as a user starts it, driven by Playwright in Debian's chromium.

The server keeps one state for every page, so these tests run in file order on one server. Starting it takes
seconds, so the whole file is marked slow (``make test`` runs it, ``make test-fast`` does not).
"""

from __future__ import annotations

import gzip
import re
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
from playwright.sync_api import Page, expect

from MedTransCore.metrics import compute_metrics, reference_body_mask
from MedTransCore.phantoms import generate_phantom
from MedTransWeb.webapp import DEMO

from .conftest import MAX_UPLOAD_MB

pytestmark = pytest.mark.slow
TRANSLATION_TIMEOUT_MS = 240_000
# Share of a view's pixels that must be lit for it to count as showing an image (empty views are black).
LIT_FRACTION = 0.05
LIT_PIXELS_JS = """(img) => {
  if (!img.complete || !img.naturalWidth) return 0;
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const context = canvas.getContext('2d');
  context.drawImage(img, 0, 0);
  const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < pixels.length; i += 4) if (pixels[i] + pixels[i + 1] + pixels[i + 2] > 60) lit++;
  return lit / (canvas.width * canvas.height);
}"""


MEAN_BRIGHTNESS_JS = LIT_PIXELS_JS.replace(
    "if (pixels[i] + pixels[i + 1] + pixels[i + 2] > 60) lit++", "lit += pixels[i]"
)


def wait_for_status(page: Page, pattern: str, timeout: float = 60_000) -> str:
    """Wait until the status line matches ``pattern`` (a regular expression searched from its start)."""
    expect(page.get_by_test_id("status")).to_have_text(re.compile("^" + pattern), timeout=timeout)
    return page.get_by_test_id("status").inner_text()


def view(page: Page, role: str):
    """The remote view of ``role`` (source, synthetic, reference, threed)."""
    return page.locator(".layout-grid-item", has=page.get_by_test_id(f"view-title-{role}"))


def view_image(page: Page, role: str):
    """The image the view of ``role`` currently shows."""
    return view(page, role).locator("img.image-display-area")


def slice_positions(page: Page, roles: tuple[str, ...]) -> list[float]:
    """The slice offsets (mm) the sliders of the views of ``roles`` show."""
    thumbs = [view(page, role).locator(".v-slider-thumb") for role in roles]
    return [float(thumb.get_attribute("aria-valuenow")) for thumb in thumbs]


def scroll_source_and_check_the_others_follow(page: Page, roles: tuple[str, ...]) -> None:
    """Move the source view one slice on and check that the views of ``roles`` all show the new offset."""
    source = view(page, "source").locator(".v-slider-thumb")
    before = source.get_attribute("aria-valuenow")
    source.press("ArrowRight")
    for role in roles:
        expect(view(page, role).locator(".v-slider-thumb")).not_to_have_attribute("aria-valuenow", before)
    assert len(set(slice_positions(page, roles))) == 1, (
        f"the views do not scroll together: {slice_positions(page, roles)}"
    )


def choose(page: Page, test_id: str, option: str) -> None:
    """Pick ``option`` in the drop-down list ``test_id``."""
    page.get_by_test_id(test_id).click()
    # Only the open menu: the previous menu's list stays in the page while it fades out (same option names).
    page.locator(".v-overlay--active").get_by_role("option", name=option, exact=True).click()


def wait_for_image(page: Page, role: str, script: str, accept, what: str, timeout_s: float = 30.0) -> float:
    """Poll ``script`` on the image of a view until ``accept(value)``: server-rendered images arrive after the
    page's own update, so a view is checked by what it shows, when it shows it."""
    image = view_image(page, role)
    image.wait_for(timeout=timeout_s * 1000)
    for _ in range(int(timeout_s / 0.25)):
        value = image.evaluate(script)
        if accept(value):
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"the {role} view still does not show {what} (last value {value:.3g})")


def wait_until_rendered(page: Page, role: str) -> float:
    """Wait until a view shows an image (enough of its pixels lit)."""
    return wait_for_image(page, role, LIT_PIXELS_JS, lambda lit: lit > LIT_FRACTION, "an image")


def shown_metrics(page: Page) -> dict[str, tuple[float, str]]:
    """``{metric: (value, text)}`` from the metrics table rows."""
    rows = page.get_by_test_id("metrics-table").locator("tr[data-metric]")
    shown = {}
    for index in range(rows.count()):
        row = rows.nth(index)
        value = row.locator("td.mt-value")
        shown[row.get_attribute("data-metric")] = (float(value.get_attribute("data-value")), value.inner_text())
    return shown


def load_demo(page: Page) -> None:
    """Load the demo phantom; over a result the page asks first, and this answers yes."""
    had_result = page.get_by_test_id("download-nifti").is_enabled()
    page.get_by_test_id("load-demo").click()
    if had_result:
        page.get_by_test_id("demo-dialog-confirm").click()
    wait_for_status(page, "ready: demo phantom loaded")


def test_the_server_listens_on_loopback_and_prints_its_url(web_server):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", web_server.url)


def test_the_demo_translation_shows_labelled_views_and_the_cores_metrics(page, artifacts, tmp_path):
    load_demo(page)
    expect(page.get_by_test_id("source-modality")).to_contain_text("(CBCT)")
    expect(page.get_by_test_id("target-modality")).to_contain_text("(CT)")
    wait_until_rendered(page, "source")
    wait_until_rendered(page, "reference")
    scroll_source_and_check_the_others_follow(page, ("source", "reference"))

    button = page.get_by_test_id("translate-button")
    button.click()
    expect(button).to_have_text(re.compile("Cancel", re.IGNORECASE))
    wait_for_status(page, "(running|done)")
    status = wait_for_status(page, "(done|error)", timeout=TRANSLATION_TIMEOUT_MS)
    assert status.startswith("done"), status
    expect(button).to_have_text(re.compile("Translate", re.IGNORECASE))
    for role in ("source", "synthetic", "reference"):
        wait_until_rendered(page, role)
    scroll_source_and_check_the_others_follow(page, ("source", "synthetic", "reference"))
    expect(page.get_by_test_id("view-title-synthetic")).to_contain_text("SYNTHETIC CT")
    expect(page.get_by_test_id("metrics-table").locator("tr[data-metric]").first).to_be_visible()
    page.screenshot(path=str(artifacts / "web_demo_translation.png"))

    with page.expect_download() as download:
        page.get_by_test_id("download-nifti").click()
    path = tmp_path / download.value.suggested_filename
    download.value.save_as(path)
    assert path.name.endswith(".nii.gz") and b"SYNTHETIC" in gzip.decompress(path.read_bytes())[:348]
    synthetic = sitk.ReadImage(str(path))
    reference = generate_phantom(**DEMO, modalities=["CT"]).images["CT"]
    assert synthetic.GetSize() == reference.GetSize()
    np.testing.assert_allclose(synthetic.GetSpacing(), reference.GetSpacing())
    np.testing.assert_allclose(synthetic.GetOrigin(), reference.GetOrigin(), atol=1e-4)

    mask = reference_body_mask(reference, "CT")
    expected = compute_metrics(sitk.GetArrayFromImage(synthetic), sitk.GetArrayFromImage(reference), "CT", mask=mask)
    shown = shown_metrics(page)
    assert {"MAE", "PSNR", "SSIM"} <= set(shown)
    for name, (value, text) in shown.items():
        assert value == pytest.approx(expected[name], rel=1e-5, abs=1e-6), name
        assert float(text) == pytest.approx(expected[name], rel=5e-3, abs=5e-4), name

    with page.expect_download() as download:
        page.get_by_test_id("download-dicom").click()
    archive = tmp_path / download.value.suggested_filename
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "dicom")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(next((tmp_path / "dicom").iterdir())))
    assert len(files) == reference.GetSize()[2]
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()
    assert "SYNTHETIC" in reader.GetMetaData("0008|0008")  # ImageType

    before = view_image(page, "source").evaluate(MEAN_BRIGHTNESS_JS)
    choose(page, "window-preset", "Bone (CT) · W 1800 / L 400")
    wait_for_image(page, "source", MEAN_BRIGHTNESS_JS, lambda mean: mean < 0.8 * before, "the darker bone window")
    choose(page, "window-preset", "Modality default")

    page.get_by_test_id("difference-toggle").locator("input").check()
    expect(page.get_by_test_id("view-subtitle-synthetic")).to_contain_text("difference to reference")
    page.get_by_test_id("threed-toggle").locator("input").check()
    wait_until_rendered(page, "threed")
    page.screenshot(path=str(artifacts / "web_demo_difference_3d.png"))


def test_the_demo_follows_the_chosen_modalities_any_to_any(page):
    load_demo(page)
    choose(page, "target-modality", "MR T2-FLAIR (MR_FLAIR)")
    expect(page.get_by_test_id("view-title-reference")).to_have_text("REFERENCE · MR FLAIR (acquired)")
    choose(page, "source-modality", "MR T1-weighted (MR_T1)")
    expect(page.get_by_test_id("view-title-source")).to_have_text("SOURCE · MR T1")
    wait_for_status(page, "ready: demo phantom loaded")
    wait_until_rendered(page, "source")
    wait_until_rendered(page, "reference")
    expect(page.get_by_test_id("translate-button")).to_be_enabled()


def test_cancel_stops_a_running_translation_and_adds_nothing(page):
    load_demo(page)
    button = page.get_by_test_id("translate-button")
    button.click()
    expect(button).to_have_text(re.compile("Cancel", re.IGNORECASE))
    button.click()
    wait_for_status(page, "cancelled")
    expect(button).to_have_text(re.compile("Translate", re.IGNORECASE))
    expect(page.get_by_test_id("metrics-table").locator("tr[data-metric]")).to_have_count(0)
    expect(page.get_by_test_id("download-nifti")).to_be_disabled()


def test_bad_uploads_give_a_message_in_the_page_and_the_server_keeps_serving(page, web_server, tmp_path):
    flat = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.arange(64, dtype=np.float32).reshape(8, 8)), str(flat))
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x00" * 1000)
    huge = tmp_path / "huge.nrrd"
    huge.write_bytes(b"\x00" * (MAX_UPLOAD_MB * 1024**2 + 1))
    cases = {
        notes: "'notes.txt' is not a supported image file",
        flat: "'slice.nii.gz' is a 2D image",
        broken: "'broken.nii.gz' could not be read",
        huge: "larger than the server's limit",
    }
    upload = page.get_by_test_id("upload-source")
    for path, message in cases.items():
        upload.set_input_files(str(path))
        wait_for_status(page, f"error: .*{message}")
        assert web_server.alive
    good = tmp_path / "ct_phantom.nii.gz"
    sitk.WriteImage(generate_phantom(shape=(24, 24, 24), modalities=["CT"]).images["CT"], str(good))
    upload.set_input_files(str(good))
    wait_for_status(page, r"ready: ct_phantom loaded as the source \(CT\)")
    wait_until_rendered(page, "source")
