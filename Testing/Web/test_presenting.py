"""What the page says: captions, metric rows and choices (pure functions, no server)."""

from __future__ import annotations

import math

from MedTransCore.bundles import installed_bundles
from MedTransWeb.presenting import metric_rows, model_items, result_summary, view_captions

SETTINGS = {
    "model": "unet-cbct",
    "version": "1.2.0",
    "family": "unet",
    "steps": None,
    "seed": 3,
    "device": "cpu",
    "source_modality": "CBCT",
    "target_modality": "CT",
}


def test_the_synthetic_view_says_synthetic_before_and_after_a_translation():
    before = view_captions(
        "MR_T1", "MR_FLAIR", has_source=True, reference_modality=None, settings=None, difference_span=None
    )
    after = view_captions(
        "CBCT", "CT", has_source=True, reference_modality="CT", settings=SETTINGS, difference_span=None
    )
    assert before["synthetic"][0] == "SYNTHETIC MR FLAIR" and "Press Translate" in before["synthetic"][2]
    assert after["synthetic"] == ("SYNTHETIC CT", "made by model unet-cbct from CBCT", "")
    assert after["reference"][0] == "REFERENCE · CT (acquired)" and "upload the acquired" in before["reference"][2]


def test_the_difference_caption_gives_the_colour_scale_in_the_target_unit():
    captions = view_captions(
        "CBCT", "CT", has_source=True, reference_modality="CT", settings=SETTINGS, difference_span=250.4
    )
    assert captions["synthetic"][1] == "difference to reference: blue −250 … red +250 HU"


def test_metric_rows_keep_the_order_and_give_units_and_numbers():
    rows = metric_rows({"MAE": 61.234, "PSNR": 27.5, "SSIM": 0.91234, "NCC": math.nan}, "CT")
    assert [r["name"] for r in rows] == ["MAE", "PSNR", "SSIM", "NCC"]
    assert [(r["text"], r["unit"]) for r in rows] == [("61.23", "HU"), ("27.50", "dB"), ("0.9123", ""), ("-", "")]
    assert rows[3]["value"] is None and rows[0]["value"] == 61.234


def test_the_model_choice_is_automatic_first_and_empty_without_a_model():
    bundles = [b for b in installed_bundles() if b.supports("CBCT", "CT")]
    items = model_items(bundles)
    assert items[0]["value"] == "auto" and [i["value"] for i in items[1:]] == [b.name for b in bundles]
    assert model_items([]) == []


def test_the_result_summary_names_model_seed_and_device():
    assert result_summary(SETTINGS) == "Synthetic CT from CBCT · model unet-cbct 1.2.0 (unet) · seed 3 · cpu"
