"""What the page says: captions, metric rows and choices (pure functions, no server)."""

from __future__ import annotations

import math

from MedTransCore.bundles import installed_bundles
from MedTransSlicerLib.preflight import Preflight
from MedTransWeb.presenting import (
    baseline_columns,
    followed_reference_modality,
    metric_rows,
    metrics_note,
    model_card,
    model_items,
    result_summary,
    view_captions,
    worse_than,
)

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


def test_a_model_that_loses_to_a_baseline_has_its_rows_marked_and_the_baselines_beside_it():
    metrics = {"MAE": 120.0, "ME": -5.0, "PSNR": 22.0, "SSIM": 0.8}
    baselines = {
        "source as is": {"MAE": 150.0, "ME": 40.0, "PSNR": 20.0, "SSIM": 0.7},
        "histogram matching": {"MAE": 90.0, "ME": 2.0, "PSNR": 25.0, "SSIM": 0.85},
    }
    rows = metric_rows(metrics, "CT", baselines)
    assert [b["name"] for b in rows[0]["baselines"]] == ["source as is", "histogram matching"]
    assert [b["text"] for b in rows[0]["baselines"]] == ["150.00", "90.00"]
    assert [r["worse"] for r in rows] == [True, True, True, True]  # histogram matching wins everywhere
    assert baseline_columns(baselines) == ["Source as is", "Histogram matching"]
    assert baseline_columns(None) == [] and metric_rows(metrics, "CT")[0]["baselines"] == []


def test_worse_knows_which_way_each_metric_points():
    assert worse_than("MAE", 10.0, 5.0) and not worse_than("MAE", 5.0, 10.0)
    assert worse_than("SSIM", 0.5, 0.6) and worse_than("PSNR", 20.0, 21.0) and not worse_than("NCC", 0.9, 0.8)
    assert worse_than("ME", -30.0, 10.0) and not worse_than("ME", -3.0, 10.0)  # the bias's size counts
    assert not worse_than("MAE", math.nan, 1.0) and not worse_than("MAE", 1.0, math.nan)


def test_a_reference_guessed_from_its_kind_follows_the_target_and_a_named_or_chosen_one_stays():
    assert followed_reference_modality("MR_T1", "MR_T2", named=False, explicit=False) == "MR_T2"
    assert followed_reference_modality("MR_T1", "CT", named=False, explicit=False) == "MR_T1"  # never MR -> CT
    assert followed_reference_modality("CT", "CT_VENOUS", named=False, explicit=False) == "CT_VENOUS"
    assert followed_reference_modality("MR_T2", "MR_FLAIR", named=True, explicit=False) == "MR_T2"
    assert followed_reference_modality("MR_PD", "MR_T2", named=False, explicit=True) == "MR_PD"


def test_the_reference_caption_says_when_it_is_not_compared():
    captions = view_captions(
        "MR_T1", "CT", has_source=True, reference_modality="MR_T2", settings=None, difference_span=None
    )
    assert captions["reference"] == ("REFERENCE · MR T2 (acquired)", "not the target (CT): not compared", "")
    same = view_captions("MR_T1", "CT", has_source=True, reference_modality="CT", settings=None, difference_span=None)
    assert same["reference"][1] == ""


def test_the_metrics_note_never_contradicts_the_reference_shown():
    def note(**kwargs):
        return metrics_note("CT", **{"compared": False, "reference_changed": False, "has_result": True, **kwargs})

    assert note(reference_modality=None).startswith("No reference volume")
    assert note(reference_modality="MR_T2") == "The reference is MR T2, not CT: no difference map or metrics."
    assert "baselines" in note(reference_modality="CT", compared=True)
    assert note(reference_modality="CT", reference_changed=True).startswith("The reference changed")
    assert note(reference_modality=None, reference_changed=True).startswith("The reference was removed")
    assert "No reference" not in note(reference_modality="CT")
    assert note(reference_modality="CT", has_result=False).startswith("Metrics appear after")


def test_the_model_card_names_the_choice_its_domain_and_limitations():
    preflight = Preflight(
        model="phantom-head-unet",
        automatic=True,
        modelDomain="head, whole-head, phantom data",
        intendedUse="teaching",
        limitations="phantoms only",
        inputDomain="whole head (a simulated phantom)",
    )
    card = model_card(preflight)
    assert card["title"] == "Automatic choice: phantom-head-unet"
    assert card["domain"] == "Trained on: head, whole-head, phantom data"
    assert card["input"] == "This source looks like: whole head (a simulated phantom)"
    assert (card["use"], card["limitations"]) == ("teaching", "phantoms only")
    assert model_card(Preflight(refusal="no")) == {}
    assert model_card(Preflight(model="identity", automatic=False))["title"] == "Chosen model: identity"
