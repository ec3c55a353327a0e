"""The seven broken steps of issue 10, end to end in Debian's chromium: one coherent state and guard rails before a
run. Each test leaves screenshots at 1366x768 and 1920x1080 in ``Testing/artifacts`` (``web_guard_<step>_<width>.png``);
the results and views part of the issue is in ``test_web_results.py``.

The server keeps one state for every page: each test loads what it needs first (the demo or its own uploads).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import SimpleITK as sitk
from playwright.sync_api import expect

from MedTransCore.phantoms import generate_phantom

from .browsing import (
    SIZES,
    brightness,
    drag,
    open_page,
    screenshots,
    slider,
    slider_middle,
    slider_value,
    translate,
    upload,
)
from .test_web_app import (
    MEAN_BRIGHTNESS_JS,
    TRANSLATION_TIMEOUT_MS,
    choose,
    load_demo,
    wait_for_image,
    wait_for_status,
    wait_until_rendered,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def page(browser, web_server):
    """A page on the app at 1366x768 (the small laptop screen the layout must work on)."""
    yield from open_page(browser, web_server, SIZES[0])


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> dict[str, str]:
    """Volumes written the way a user would upload them: ``{name: path}``."""
    folder = tmp_path_factory.mktemp("scans")
    paths = {}

    def write(name: str, image: sitk.Image) -> None:
        paths[name] = str(folder / f"{name}.nii.gz")
        sitk.WriteImage(image, paths[name])

    # A skull-stripped brain T1 as a scanner gives it: 240x240x155 at 1 mm, slices 0..154 mm (not centred on 0).
    z, y, x = np.ogrid[:155, :240, :240]
    radius = ((z - 77) / 60.0) ** 2 + ((y - 120) / 95.0) ** 2 + ((x - 120) / 80.0) ** 2
    brain = np.zeros((155, 240, 240), np.int16)
    brain[radius < 1] = 600
    brain[radius < 0.6] = 900
    image = sitk.GetImageFromArray(brain)
    image.SetOrigin((-119.5, -119.5, 0.0))
    write("brain_t1", image)

    phantom = generate_phantom(shape=(24, 24, 24), modalities=["MR_T1", "MR_T2", "MR_FLAIR", "CT"]).images
    write("t1_patient", phantom["MR_T1"])
    write("t2_reference", phantom["MR_T2"])
    write("scan_b", phantom["MR_FLAIR"])  # a name that says nothing: MR from its intensities only
    write("ct_reference", phantom["CT"])
    write("volume_a", phantom["MR_T1"])
    far = sitk.Image(phantom["CT"])
    far.SetOrigin(tuple(o + 1000.0 for o in far.GetOrigin()))
    write("ct_elsewhere", far)
    write("ct_half", phantom["CT"][:, :, :12])  # the upper half of the head only
    return paths


# -- step 1 ------------------------------------------------------------------------------------------------------


def test_a_new_volume_recentres_the_slice_views_and_reset_views_does_too(page, scans, artifacts):
    load_demo(page)
    wait_until_rendered(page, "source")

    upload(page, "source", scans["brain_t1"], "ready: brain_t1 loaded as the source (MR T1)")

    expect(slider(page, "source")).to_have_attribute("aria-valuemax", "154")
    assert slider_value(page, "source") == pytest.approx(slider_middle(page, "source"), abs=1.0)
    wait_until_rendered(page, "source")
    expect(page.get_by_test_id("slice-text-source")).to_contain_text(re.compile(r"slice 7[78]/155 · S 7[67]\.\d mm"))

    slider(page, "source").press("Home")  # the first slice: below the brain
    expect(slider(page, "source")).to_have_attribute("aria-valuenow", "0")
    page.get_by_test_id("reset-views").click()
    expect(slider(page, "source")).not_to_have_attribute("aria-valuenow", "0")
    assert slider_value(page, "source") == pytest.approx(slider_middle(page, "source"), abs=1.0)
    wait_until_rendered(page, "source")
    screenshots(page, artifacts, "1_recentred", focus=page.get_by_test_id("reset-views"))


# -- step 2 ------------------------------------------------------------------------------------------------------


def test_the_reference_modality_is_guessed_shown_changeable_and_follows_the_target(page, scans, artifacts):
    upload(page, "source", scans["t1_patient"], "ready: t1_patient loaded as the source (MR T1)")
    choose(page, "target-modality", "CT (non-contrast) (CT)")

    upload(page, "reference", scans["t2_reference"], "ready: t2_reference loaded as the reference (MR T2)")
    expect(page.get_by_test_id("reference-info")).to_contain_text("Reference (MR T2): t2_reference")
    expect(page.get_by_test_id("reference-modality")).to_contain_text("(MR_T2)")
    expect(page.get_by_test_id("view-title-reference")).to_have_text("REFERENCE · MR T2 (acquired)")
    expect(page.get_by_test_id("view-subtitle-reference")).to_have_text("not the target (CT): not compared")
    expect(page.get_by_test_id("reference-warnings")).to_contain_text("it will not be compared")

    choose(page, "target-modality", "MR T2-weighted (MR_T2)")
    expect(page.get_by_test_id("reference-warnings")).to_have_count(0)
    expect(page.get_by_test_id("view-subtitle-reference")).to_have_count(0)

    # A name that says nothing: MR from the intensities, so it takes the MR target, and follows it.
    upload(page, "reference", scans["scan_b"], "ready: scan_b loaded as the reference (MR T2)")
    choose(page, "target-modality", "MR T2-FLAIR (MR_FLAIR)")
    expect(page.get_by_test_id("reference-info")).to_contain_text("Reference (MR FLAIR): scan_b")
    expect(page.get_by_test_id("view-title-reference")).to_have_text("REFERENCE · MR FLAIR (acquired)")

    # The user's own choice stands.
    page.get_by_test_id("reference-modality").click()
    page.get_by_role("option", name="MR proton-density-weighted (MR_PD)", exact=True).click()
    expect(page.get_by_test_id("reference-info")).to_contain_text("Reference (MR PD): scan_b")
    choose(page, "target-modality", "MR T2-weighted (MR_T2)")
    expect(page.get_by_test_id("reference-info")).to_contain_text("Reference (MR PD)")
    expect(page.get_by_test_id("reference-warnings")).to_contain_text("The reference is MR PD and the target MR T2")
    wait_until_rendered(page, "reference")
    screenshots(page, artifacts, "2_reference_modality", focus=page.get_by_test_id("reference-warnings"))


def test_a_reference_elsewhere_is_refused_and_one_covering_part_of_the_source_is_flagged(page, scans, artifacts):
    upload(page, "source", scans["t1_patient"], "ready: t1_patient loaded as the source (MR T1)")
    choose(page, "target-modality", "CT (non-contrast) (CT)")
    upload(page, "reference", scans["ct_reference"], "ready: ct_reference loaded as the reference (CT)")

    page.get_by_test_id("upload-reference").set_input_files(scans["ct_elsewhere"])
    status = wait_for_status(page, "error: ")
    assert "does not overlap the source" in status and "the reference was not loaded" in status, status
    expect(page.get_by_test_id("reference-info")).to_contain_text("ct_reference")  # the one before stays

    upload(page, "reference", scans["ct_half"], "ready: ct_half loaded as the reference (CT)")
    expect(page.get_by_test_id("reference-warnings")).to_contain_text("covers only 50% of the source's field of view")
    screenshots(page, artifacts, "2b_reference_coverage", focus=page.get_by_test_id("reference-warnings"))


# -- step 3 ------------------------------------------------------------------------------------------------------


def test_a_new_source_a_new_reference_and_the_demo_never_leave_stale_results(page, scans, artifacts):
    load_demo(page)
    choose(page, "model", "identity · identity")
    assert translate(page).startswith("done")
    expect(page.get_by_test_id("metrics-table").locator("tr[data-metric]").first).to_be_visible()

    # A patient's volume: the result goes, and so does the demo's phantom reference (never this patient's scan).
    upload(page, "source", scans["t1_patient"], "ready: t1_patient loaded as the source (MR T1)")
    expect(page.get_by_test_id("download-nifti")).to_be_disabled()
    expect(page.get_by_test_id("metrics-table")).to_have_count(0)
    expect(page.get_by_test_id("reference-note")).to_contain_text("The demo phantom's reference was removed")
    expect(page.get_by_test_id("view-title-reference")).to_have_text("REFERENCE")

    choose(page, "target-modality", "CT (non-contrast) (CT)")
    choose(page, "model", "identity · identity")
    assert translate(page).startswith("done")
    expect(page.get_by_test_id("metrics-table")).to_have_count(0)
    expect(page.get_by_test_id("metrics-note")).to_contain_text("No reference volume")

    # A reference after the result: no metrics against anything else, and one note that says so.
    upload(page, "reference", scans["ct_reference"], "ready: ct_reference loaded as the reference (CT)")
    expect(page.get_by_test_id("metrics-note")).to_contain_text("The reference changed after this translation")
    assert translate(page).startswith("done")
    expect(page.get_by_test_id("metrics-table").locator("tr[data-metric]").first).to_be_visible()
    expect(page.get_by_test_id("difference-toggle").locator("input")).to_be_enabled()

    upload(page, "reference", scans["ct_reference"], "ready: ct_reference loaded as the reference (CT)")
    expect(page.get_by_test_id("metrics-table")).to_have_count(0)
    expect(page.get_by_test_id("difference-toggle").locator("input")).to_be_disabled()
    expect(page.get_by_test_id("metrics-note")).to_contain_text("The reference changed after this translation")
    panel = page.get_by_test_id("results-panel").inner_text()
    assert "No reference volume" not in panel and "reference is" not in panel.lower(), panel
    screenshots(page, artifacts, "3_reference_changed")

    # The demo over a result asks first.
    page.get_by_test_id("load-demo").click()
    expect(page.get_by_test_id("demo-dialog")).to_be_visible()
    screenshots(page, artifacts, "3_demo_dialog")
    page.get_by_test_id("demo-dialog-cancel").click()
    expect(page.get_by_test_id("demo-dialog")).to_have_count(0)
    expect(page.get_by_test_id("download-nifti")).to_be_enabled()
    page.get_by_test_id("load-demo").click()
    page.get_by_test_id("demo-dialog-confirm").click()
    wait_for_status(page, "ready: demo phantom loaded")
    expect(page.get_by_test_id("download-nifti")).to_be_disabled()


# -- step 4 ------------------------------------------------------------------------------------------------------


def test_a_double_click_on_translate_does_not_cancel_the_run(page, artifacts):
    load_demo(page)
    choose(page, "model", "identity · identity")
    button = page.get_by_test_id("translate-button")
    trigger = button.get_attribute("data-trigger")

    button.click()
    page.wait_for_timeout(250)  # a double click's second click, as a person makes it
    page.evaluate("name => window.trame.trigger(name)", trigger)  # sent whatever the button shows by then
    box = button.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    status = wait_for_status(page, "(done|error|cancelled)", timeout=TRANSLATION_TIMEOUT_MS)
    assert status.startswith("done"), status
    screenshots(page, artifacts, "4_double_click", focus=page.get_by_test_id("status"))


# -- step 5 ------------------------------------------------------------------------------------------------------


def test_source_equal_to_target_is_refused_before_a_run_with_the_plausibility_warning_beside_it(page, scans, artifacts):
    upload(page, "source", scans["volume_a"], "ready: volume_a loaded as the source (MR T1)")
    choose(page, "target-modality", "CT (non-contrast) (CT)")
    choose(page, "source-modality", "CT (non-contrast) (CT)")  # an MR relabelled as CT

    expect(page.get_by_test_id("refusal")).to_contain_text("the source is already CT")
    expect(page.get_by_test_id("translate-button")).to_be_disabled()
    expect(page.get_by_test_id("input-warnings")).to_contain_text("declared CT but the image has no air")
    screenshots(page, artifacts, "5_source_is_target", focus=page.get_by_test_id("translate-button"))

    choose(page, "source-modality", "MR T1-weighted (MR_T1)")
    expect(page.get_by_test_id("refusal").filter(has_text="the source is already")).to_have_count(0)
    expect(page.get_by_test_id("input-warnings")).to_have_count(0)


# -- step 6 ------------------------------------------------------------------------------------------------------


def test_the_model_that_will_run_is_shown_with_its_domain_and_an_out_of_domain_one_is_flagged(page, scans, artifacts):
    upload(page, "source", scans["brain_t1"], "ready: brain_t1 loaded as the source (MR T1)")
    choose(page, "target-modality", "CT (non-contrast) (CT)")
    choose(page, "model", "Automatic (best installed model)")

    # Automatic never hands a patient's brain to a phantom model: refused, with what is installed and why not.
    refusal = page.get_by_test_id("refusal")
    expect(refusal).to_contain_text("no installed model fits this input (skull-stripped brain")
    expect(refusal).to_contain_text("phantom-head-unet (head, whole-head, phantom data)")
    expect(page.get_by_test_id("translate-button")).to_be_disabled()

    choose(page, "model", "phantom-head-unet · unet")
    card = page.get_by_test_id("model-card")
    expect(card).to_contain_text("Chosen model: phantom-head-unet")
    expect(card).to_contain_text("Trained on: head, whole-head, phantom data")
    expect(card).to_contain_text("This source looks like: skull-stripped brain")
    expect(page.get_by_test_id("model-card-limitations")).to_contain_text("Trained only on simulated head phantoms")
    expect(page.get_by_test_id("input-warnings")).to_contain_text("its output is unreliable here")
    expect(page.get_by_test_id("translate-button")).to_be_enabled()
    card.locator("summary").click()
    screenshots(page, artifacts, "6_out_of_domain", focus=page.get_by_test_id("translate-button"))

    choose(page, "target-modality", "MR T2-weighted (MR_T2)")
    choose(page, "model", "Automatic (best installed model)")
    expect(page.get_by_test_id("model-card-title")).to_have_text("Automatic choice: brain-mr-slice-unet")
    expect(card).to_contain_text("Trained on: brain, skull-stripped, real data")
    expect(page.get_by_test_id("input-warnings")).to_have_count(0)


# -- step 7 ------------------------------------------------------------------------------------------------------


def test_window_presets_fit_the_modality_shown_and_a_mouse_drag_changes_the_window(page, artifacts):
    load_demo(page)
    choose(page, "source-modality", "MR T1-weighted (MR_T1)")  # the demo follows: an MR source, a CT reference
    expect(page.get_by_test_id("view-title-source")).to_have_text("SOURCE · MR T1")
    wait_for_status(page, "ready: demo phantom loaded")
    wait_until_rendered(page, "source")
    wait_until_rendered(page, "reference")

    mr, ct = brightness(page, "source"), brightness(page, "reference")
    choose(page, "window-preset", "Brain (MR)")
    wait_for_image(page, "source", MEAN_BRIGHTNESS_JS, lambda m: abs(m - mr) > 0.1 * mr, "the MR brain window")
    assert brightness(page, "reference") == pytest.approx(ct, rel=0.02)  # a CT keeps its window

    mr = brightness(page, "source")
    choose(page, "window-preset", "Bone (CT) · W 1800 / L 400")
    wait_for_image(page, "reference", MEAN_BRIGHTNESS_JS, lambda m: m < 0.8 * ct, "the darker bone window")
    assert brightness(page, "source") == pytest.approx(mr, rel=0.02)  # an MR keeps its window

    before = brightness(page, "source")
    drag(page, "source", 120, 80)
    wait_for_image(page, "source", MEAN_BRIGHTNESS_JS, lambda m: abs(m - before) > 0.1 * before, "a new window")
    screenshots(page, artifacts, "7_window_level", focus=page.get_by_test_id("window-preset"))
