"""Several sequences in, and the model's limitations shown, in the browser (the real server, Debian's chromium).

The server keeps one state for every page: these tests run in file order on one server.
"""

from __future__ import annotations

import re

import pytest
import SimpleITK as sitk
from playwright.sync_api import Page, expect

from MedTransCore.bundles import find_bundle
from MedTransCore.phantoms import generate_phantom

from ..Slicer.test_logic_extra_sources import TWO_SOURCE_LIMITATIONS, saveTwoSourceBundle
from .conftest import SERVER_START_TIMEOUT_S, WebServer
from .test_web_app import TRANSLATION_TIMEOUT_MS, choose, wait_for_status, wait_until_rendered

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def web_server(tmp_path_factory):
    """The app as a user starts it, with one user-installed model that takes MR_T1 + MR_FLAIR -> MR_T2."""
    home = tmp_path_factory.mktemp("web-home")
    (home / "models").mkdir()
    saveTwoSourceBundle(home / "models")
    server = WebServer(home)
    try:
        server.wait_ready(SERVER_START_TIMEOUT_S)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    """NIfTI files of one phantom patient: ``{modality: path}``, named the way scanners name their series."""
    folder = tmp_path_factory.mktemp("sequences")
    images = generate_phantom(shape=(24, 24, 24), modalities=["MR_T1", "MR_FLAIR", "MR_T2"]).images
    paths = {}
    for modality, name in (("MR_T1", "t1_phantom"), ("MR_FLAIR", "flair_phantom"), ("MR_T2", "t2_phantom")):
        paths[modality] = folder / f"{name}.nii.gz"
        sitk.WriteImage(images[modality], str(paths[modality]))
    return paths


def added(page: Page):
    return page.get_by_test_id("extra-source")


def translate(page: Page) -> str:
    """Click Translate and return the status the run ends with (not the one left by the run before)."""
    before = page.get_by_test_id("status").inner_text()
    page.get_by_test_id("translate-button").click()
    expect(page.get_by_test_id("status")).not_to_have_text(before)
    return wait_for_status(page, "(done|error)", timeout=TRANSLATION_TIMEOUT_MS)


def add_source(page: Page, path, status: str) -> None:
    page.get_by_test_id("upload-extra").set_input_files(str(path))
    wait_for_status(page, re.escape(status))


def test_an_added_source_is_listed_with_its_guessed_modality_and_can_be_changed_and_removed(page, sequences):
    page.get_by_test_id("upload-source").set_input_files(str(sequences["MR_T1"]))
    wait_for_status(page, re.escape("ready: t1_phantom loaded as the source (MR T1)"))
    wait_until_rendered(page, "source")

    add_source(page, sequences["MR_FLAIR"], "ready: flair_phantom added as an additional source (MR FLAIR)")
    add_source(page, sequences["MR_T2"], "ready: t2_phantom added as an additional source (MR T2)")
    expect(added(page)).to_have_count(2)
    expect(added(page).nth(0)).to_have_attribute("data-modality", "MR_FLAIR")
    expect(added(page).nth(0)).to_contain_text("flair_phantom · 24×24×24 voxels")
    expect(added(page).nth(1)).to_have_attribute("data-modality", "MR_T2")

    added(page).nth(1).get_by_test_id("extra-source-modality").click()
    page.get_by_role("option", name="MR_PD", exact=True).click()
    expect(added(page).nth(1)).to_have_attribute("data-modality", "MR_PD")

    added(page).nth(1).get_by_test_id("remove-extra-source").click()
    expect(added(page)).to_have_count(1)
    expect(added(page).nth(0)).to_have_attribute("data-modality", "MR_FLAIR")
    expect(page.get_by_test_id("source-info")).to_contain_text("t1_phantom")  # the source is untouched


def test_a_source_modality_given_twice_is_refused_with_a_message(page):
    expect(added(page)).to_have_count(1)  # the FLAIR of the test before
    added(page).nth(0).get_by_test_id("extra-source-modality").click()
    page.get_by_role("option", name="MR_T1", exact=True).click()
    expect(added(page).nth(0)).to_have_attribute("data-modality", "MR_T1")

    # Refused before any run: the refusal says why, and Translate stays off.
    expect(page.get_by_test_id("refusal")).to_contain_text("MR_T1 is given twice as a source")
    expect(page.get_by_test_id("translate-button")).to_be_disabled()
    expect(page.get_by_test_id("download-nifti")).to_be_disabled()

    added(page).nth(0).get_by_test_id("extra-source-modality").click()
    page.get_by_role("option", name="MR_FLAIR", exact=True).click()
    expect(added(page).nth(0)).to_have_attribute("data-modality", "MR_FLAIR")


def test_a_single_source_model_is_refused_for_an_added_source_before_any_run(page):
    """The logic's preflight names both sources the single-source model would get; Translate stays off."""
    choose(page, "target-modality", "MR T2-weighted (MR_T2)")
    choose(page, "model", "identity · identity")
    expect(page.get_by_test_id("refusal")).to_contain_text(re.compile(r"identity.*MR_T1( \+|,) MR_FLAIR"))
    expect(page.get_by_test_id("translate-button")).to_be_disabled()
    expect(page.get_by_test_id("download-nifti")).to_be_disabled()
    expect(page.get_by_test_id("limitations")).to_have_count(0)


def test_translating_with_an_added_source_shows_the_result_and_the_models_limitations(page):
    """Needs the core's several-source translation (issue 15)."""
    expect(added(page)).to_have_count(1)  # the FLAIR
    choose(page, "model", "two-source-test · slice_unet")

    status = translate(page)

    assert status.startswith("done") and "two-source-test" in status, status
    expect(page.get_by_test_id("limitations")).to_contain_text(TWO_SOURCE_LIMITATIONS)
    expect(page.get_by_test_id("result-summary")).to_contain_text("Synthetic MR T2 from MR T1 + MR FLAIR")
    expect(page.get_by_test_id("view-subtitle-synthetic")).to_contain_text("from MR T1 + MR FLAIR")
    expect(page.get_by_test_id("download-nifti")).to_be_enabled()
    wait_until_rendered(page, "synthetic")


def test_the_result_panel_shows_the_models_limitations_after_a_translation(page):
    added(page).nth(0).get_by_test_id("remove-extra-source").click()
    expect(added(page)).to_have_count(0)
    choose(page, "model", "identity · identity")

    status = translate(page)
    assert status.startswith("done"), status

    limitations = find_bundle("identity").metadata["limitations"]
    expect(page.get_by_test_id("limitations")).to_contain_text("Model limitations")
    expect(page.get_by_test_id("limitations")).to_contain_text(limitations)
    expect(page.get_by_test_id("result-summary")).to_contain_text("Synthetic MR T2 from MR T1 · model identity")
