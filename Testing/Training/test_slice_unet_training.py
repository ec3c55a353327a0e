"""The ``slice_unet`` family end to end on tiny synthetic subjects: slice-stack data, sequence-dropout training,
leave-one-subject-out cross-validation through the real inference pipeline, and the bundle it exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from medtrans_training.cli import main as train_main
from medtrans_training.config import resolve_config
from medtrans_training.crossval import Request, requests_of, subjects_of, summarise
from medtrans_training.crossval_report import crossval_table, replace_block
from medtrans_training.data import build_datasets
from medtrans_training.stages.slice_unet import SliceUNetStage
from MedTransCore.bundles import load_bundle
from MedTransCore.errors import InputError
from MedTransCore.metrics import brain_mr_metrics
from MedTransCore.models.slice_unet import BlurredConvTranspose2d, build_slice_unet, signal_box, slice_stack

from .helpers import write_simple_cases

MODALITIES = ["MR_T1", "MR_T2", "MR_PD"]


def slice_config(root, **train) -> dict:
    """A slice_unet config that trains in about a second (16^2 crops, a 3-level 4-8-16 2D UNet)."""
    return resolve_config(
        {
            "stage": "slice_unet",
            "seed": 0,
            "data": {
                "source": "folder",
                "root": str(root),
                "layout": "simple",
                "modalities": MODALITIES,
                "sampling": "slices",
                "context": 1,
                "normalisation": "brain_percentiles",
                "patch": [16, 16],
                "spacing": [2.0, 2.0, 2.0],
                "repeats": 4,
            },
            "model": {"network": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0}},
            "train": {"steps": 2, "batch_size": 4, "log_every": 1, "val_every": 100, "save_every": 1, **train},
            "export": {"name": "tiny-slice", "limitations": "test model", "version": "0.0.1"},
        }
    )


@pytest.fixture
def subjects(tmp_path):
    return write_simple_cases(tmp_path / "subjects", count=3, size=20, names=("t1", "t2", "pd"))


def test_the_slice_network_returns_every_modality_on_slices_of_any_size():
    network = build_slice_unet(
        input_modalities=MODALITIES, modalities=MODALITIES, context=1, channels=[4, 8, 16], strides=[2, 2]
    )
    out = network(torch.randn(2, 3, 3, 13, 18), torch.tensor([[1.0, 0, 0], [1, 1, 0]]))
    assert out.shape == (2, 3, 13, 18)
    with pytest.raises(ValueError, match="slices must be"):
        network(torch.randn(2, 3, 1, 13, 18), torch.ones(2, 3))
    with pytest.raises(ValueError, match="norm is required"):
        build_slice_unet(input_modalities=MODALITIES, modalities=MODALITIES, norm="")


def test_blurred_up_sampling_leaves_no_checkerboard_and_keeps_the_deconv_parameters():
    torch.manual_seed(0)
    deconv = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1)
    blurred = BlurredConvTranspose2d.replacing(deconv)
    flat = torch.ones(1, 3, 8, 8)

    def spread(image: torch.Tensor) -> float:  # the largest per-channel spread away from the border
        return float(image.detach()[:, :, 2:-2, 2:-2].std(dim=(-2, -1)).max())

    assert spread(deconv(flat)) > 0.05  # the transposed convolution's grid on a constant input
    assert blurred(flat).shape == deconv(flat).shape and spread(blurred(flat)) < 1e-5
    kwargs = {"input_modalities": MODALITIES, "modalities": MODALITIES, "channels": [4, 8, 16], "strides": [2, 2]}
    plain, smooth = build_slice_unet(**kwargs), build_slice_unet(**kwargs, upsample="deconv_blur")
    assert sum(isinstance(m, BlurredConvTranspose2d) for m in smooth.modules()) == 2
    smooth.load_state_dict(plain.state_dict())  # the same parameters (the blur is a fixed, unsaved buffer)
    assert smooth(torch.randn(1, 3, 3, 13, 18), torch.ones(1, 3)).shape == (1, 3, 13, 18)
    with pytest.raises(ValueError, match="upsample must be"):
        build_slice_unet(**kwargs, upsample="bilinear")
    with pytest.raises(ValueError, match="stride 2 only"):
        BlurredConvTranspose2d(3, 2, 3, stride=3)


def test_which_sequences_are_present_changes_the_prediction_once_the_film_layers_learned():
    torch.manual_seed(0)
    network = build_slice_unet(input_modalities=MODALITIES, modalities=MODALITIES, channels=[4, 8], strides=[2])
    for name, parameter in network.named_parameters():
        if ".film." in name:
            torch.nn.init.normal_(parameter, std=0.5)  # what training does to the zero-initialised FiLM layers
    slices = torch.randn(1, 3, 3, 8, 8)
    one, two = network(slices, torch.tensor([[1.0, 0, 0]])), network(slices, torch.tensor([[1.0, 1, 0]]))
    assert (one - two).abs().mean() > 1e-3


def test_slice_stacks_replicate_the_edge_slices():
    volume = torch.arange(4.0).view(1, 4, 1, 1).expand(2, 4, 2, 2)
    stack = slice_stack(volume, 0, 4, context=1)
    assert stack.shape == (4, 2, 3, 2, 2)
    assert stack[0, 0, :, 0, 0].tolist() == [0, 0, 1] and stack[3, 0, :, 0, 0].tolist() == [2, 3, 3]


def test_the_signal_box_covers_the_signal_and_none_is_returned_for_an_empty_volume():
    volume = torch.full((2, 10, 64, 64), -1.0)
    volume[1, 3:6, 30:34, 20:25] = 0.5
    zs, ys, xs = signal_box(volume, divisor=8)
    assert (zs.start, zs.stop) == (3, 6)
    assert ys.start <= 30 and ys.stop >= 34 and xs.start <= 20 and xs.stop >= 25
    assert (ys.stop - ys.start) % 8 == 0 and (xs.stop - xs.start) % 8 == 0
    assert signal_box(torch.full((1, 4, 8, 8), -1.0)) is None


def test_slice_items_hold_every_sequence_with_context_and_the_missing_ones_as_background(tmp_path):
    root = write_simple_cases(tmp_path / "cases", count=1, size=20, names=("t1", "t2"))
    train, _ = build_datasets(slice_config(root)["data"])
    item = train[0]
    assert item["images"].shape == (3, 3, 16, 16)
    assert item["available"].tolist() == [True, True, False]
    assert torch.all(item["images"][2] == -1.0) and item["mask"].shape == (1, 16, 16)
    assert item["mask"].sum() > 0


def test_balancing_by_pairs_visits_a_case_with_more_sequences_as_often_as_the_pairs_it_teaches(tmp_path):
    write_simple_cases(tmp_path / "cases", count=1, size=20, names=("t1", "t2", "pd"))
    write_simple_cases(tmp_path / "two", count=1, size=20, names=("t1", "t2"))
    (tmp_path / "two" / "case0").rename(tmp_path / "cases" / "case1")
    config = slice_config(tmp_path / "cases")
    by_case = {}
    for balance in ("cases", "pairs"):
        train, _ = build_datasets({**config["data"], "balance": balance})
        by_case[balance] = [train.cases[i]["case"] for i in train.index]
    assert [by_case["cases"].count(c) for c in ("case0", "case1")] == [4, 4]  # repeats
    assert [by_case["pairs"].count(c) for c in ("case0", "case1")] == [4 * 6, 4 * 2]  # 3 * 2 and 2 * 1 pairs
    with pytest.raises(Exception, match="data.balance"):
        build_datasets({**config["data"], "balance": "subjects"})


def test_sequence_dropout_keeps_at_least_one_input_and_one_target():
    stage = SliceUNetStage(slice_config("unused"), "cpu")
    available = torch.tensor([[True, True, True]] * 64 + [[True, False, True]] * 64)
    inputs = stage._draw_inputs(available)
    assert torch.all(inputs.sum(1) >= 1) and torch.all((available & ~inputs).sum(1) >= 1)
    assert not torch.any(inputs & ~available)
    assert (inputs[:64].sum(1) == 2).any() and (inputs[:64].sum(1) == 1).any()


def test_brain_metrics_are_perfect_for_the_truth_and_ignore_a_global_intensity_scale():
    rng = np.random.default_rng(0)
    truth = rng.uniform(100, 900, (12, 20, 20))
    brain = np.zeros(truth.shape, bool)
    brain[2:10, 4:16, 4:16] = True
    truth[~brain] = 0
    same = brain_mr_metrics(3.0 * truth, truth, brain)
    assert same["MAE_brain"] < 1e-12 and same["SSIM_brain"] == pytest.approx(1.0) and same["PSNR_whole"] > 100
    noisy = brain_mr_metrics(truth + rng.normal(0, 50, truth.shape), truth, brain)
    assert noisy["PSNR_brain"] < noisy["PSNR_whole"] and 0 < noisy["SSIM_brain"] < 1


def test_a_request_is_listed_only_when_it_beats_both_baselines_on_every_held_out_subject():
    def row(case, request, method, mae, psnr, ssim):
        metrics = dict.fromkeys(("PSNR_whole", "SSIM_whole", "MAE_whole"), 0.0)
        return {"case": case, "request": request, "method": method, "MAE_brain": mae, "PSNR_brain": psnr,
                "SSIM_brain": ssim, **metrics}  # fmt: skip

    rows = []
    for case, model_psnr in (("a", 20.0), ("b", 16.0)):
        rows += [
            row(case, "MR_T1->MR_T2", "model", 0.1, 22.0, 0.8),
            row(case, "MR_T1->MR_T2", "identity", 0.3, 15.0, 0.5),
            row(case, "MR_T1->MR_T2", "histogram_matching", 0.2, 17.0, 0.6),
            row(case, "MR_T2->MR_T1", "model", 0.1, model_psnr, 0.8),  # loses PSNR to matching on b
            row(case, "MR_T2->MR_T1", "identity", 0.3, 15.0, 0.5),
            row(case, "MR_T2->MR_T1", "histogram_matching", 0.2, 17.0, 0.6),
        ]
    rows.append(row("a", "MR_PD->MR_T1", "model", 0.1, 30.0, 0.9))
    rows += [row("a", "MR_PD->MR_T1", m, 0.5, 10.0, 0.1) for m in ("identity", "histogram_matching")]
    summary = summarise(rows)
    assert summary["MR_T1->MR_T2"]["listed"]
    assert summary["MR_T1->MR_T2"]["methods"]["model"]["PSNR_brain"] == {"mean": 22.0, "std": 0.0}
    assert not summary["MR_T2->MR_T1"]["listed"]
    assert "b: PSNR_brain 16.000 vs histogram_matching 17.000" in summary["MR_T2->MR_T1"]["not_listed_because"]
    assert "only 1 held-out subject" in summary["MR_PD->MR_T1"]["not_listed_because"][0]
    table = crossval_table({"requests": summary})
    assert "| T1 → T2 | 2 |" in table and table.count("| yes |") == 1
    with pytest.raises(ValueError, match="no <!-- crossval:x:begin -->"):
        replace_block("README", "x", table)
    readme = "a\n<!-- crossval:x:begin -->\nold\n<!-- crossval:x:end -->\nb"
    assert (
        replace_block(readme, "x", table)
        == f"a\n<!-- crossval:x:begin -->\n{table.rstrip()}\n<!-- crossval:x:end -->\nb"
    )


def test_every_pair_and_every_all_others_set_of_a_subject_is_scored(subjects):
    subject = subjects_of(slice_config(subjects))[0]
    requests = requests_of(subject)
    assert Request(("MR_T1",), "MR_T2") in requests and len(requests) == 6 + 3
    assert Request(("MR_T1", "MR_PD"), "MR_T2") in requests


@pytest.mark.slow
def test_crossval_trains_one_model_per_held_out_subject_scores_it_through_the_pipeline_and_writes_the_report(
    subjects, tmp_path, capsys
):
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(slice_config(subjects)))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- crossval:tiny-slice:begin -->\n<!-- crossval:tiny-slice:end -->\n")
    out = tmp_path / "cv"
    args = ["crossval", str(config_path), "--out", str(out), "--device", "cpu", "--table", str(tmp_path / "t.md")]
    args += ["--figure", str(tmp_path / "f.png"), "--readme", str(readme)]
    train_main([*args, "--folds", "case0"])
    assert (out / "fold-case0" / "scores.json").is_file() and not (out / "crossval.json").exists()
    train_main([*args, "--folds", "case1", "--partial"])  # a summary of the folds scored so far
    partial = json.loads((out / "crossval.json").read_text())
    assert partial["subjects"] == ["case0", "case1"] and partial["not_held_out"] == ["case2"]
    assert "not held out" in readme.read_text(encoding="utf-8")
    train_main(args)  # resumes: case0 and case1 are not trained again
    summary = json.loads((out / "crossval.json").read_text())
    assert summary["subjects"] == ["case0", "case1", "case2"] and summary["not_held_out"] == []
    entry = summary["requests"]["MR_T1+MR_PD->MR_T2"]
    assert entry["subjects"] == ["case0", "case1", "case2"]
    assert set(entry["methods"]) == {"model", "identity", "histogram_matching"}
    assert len(summary["rows"]) == 3 * 9 * 3
    assert "fold case0: scored" in capsys.readouterr().err
    assert "| T1 + PD → T2 | 3 |" in readme.read_text(encoding="utf-8") and (tmp_path / "f.png").stat().st_size > 10_000
    # Every fold model was trained without its held-out subject.
    fold = json.loads((out / "fold-case1" / "config.json").read_text())
    assert fold["data"]["test_cases"] == ["case1"]
    # Fold bundles map their output onto the target quantiles of their own training subjects.
    assert "output_quantiles.safetensors" in load_bundle(out / "fold-case1" / "bundle").metadata["weights"]
    # The synthetic output of a fold model is exactly 0 outside the held-out subject's brain.
    from MedTransCore.translate import translate_image

    image = sitk.ReadImage(str(subjects / "case1" / "t1.nii.gz"))
    result = translate_image(image, "MR_T1", "MR_T2", model=str(out / "fold-case1" / "bundle"))
    outside = sitk.GetArrayFromImage(image) == 0
    assert np.all(sitk.GetArrayFromImage(result.image)[outside] == 0)


def test_a_fine_tuning_stage_starts_from_the_earlier_runs_weights_and_adds_the_ssim_loss(subjects, tmp_path):
    import yaml

    from medtrans_training.crossval import train_recipe
    from medtrans_training.recipe import load_recipe
    from medtrans_training.stages.base import load_run_state

    (tmp_path / "slice.json").write_text(json.dumps(slice_config(subjects)))
    finetune = {"name": "finetune", "config": "slice.json", "set": ["model.loss.ssim=1.0", "train.steps=1"]}
    pipeline = {
        "pipeline": [{"name": "base", "config": "slice.json"}, {**finetune, "runs": {"model.init_run": "base"}}]
    }
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(pipeline))
    recipe = load_recipe(tmp_path / "ft.yaml")
    model_run = train_recipe(recipe, tmp_path / "cv" / "all", None, device="cpu", log=print)
    assert model_run == tmp_path / "cv" / "all" / "finetune"
    assert recipe.stages[0].config["model"].get("loss", {}).get("ssim", 0.0) == 0.0  # the base stage is unchanged
    logged = [json.loads(line) for line in (model_run / "metrics.jsonl").read_text().splitlines()]
    assert any(0.0 <= r.get("loss_ssim", -1) <= 2.0 for r in logged)
    # Built from init_run, the generator holds the base run's EMA weights before its first step.
    config = json.loads((model_run / "config.json").read_text())
    generator = SliceUNetStage(config).build_modules()["generator"]
    base = load_run_state(tmp_path / "cv" / "all" / "base", "generator")
    assert all(torch.equal(generator.state_dict()[k], v) for k, v in base.items())
    config["model"]["network"]["channels"] = [4, 8, 32]
    with pytest.raises(InputError, match="holds another network"):
        SliceUNetStage(config).build_modules()


@pytest.mark.slow
def test_the_bundle_trained_on_every_subject_lists_only_what_the_folds_earned(subjects, tmp_path):
    from medtrans_training.crossval import export_final

    config = slice_config(subjects)
    summary = {
        "protocol": "p",
        "listing_rule": "r",
        "subjects": ["case0", "case1", "case2"],
        "requests": {
            "MR_T1->MR_T2": {"listed": True, "subjects": ["case0", "case1"]},
            "MR_T2->MR_T1": {"listed": False, "subjects": ["case0", "case1"]},
            "MR_T1+MR_PD->MR_T2": {"listed": True, "subjects": ["case0", "case1"]},
        },
        "rows": [{"case": "case0", "request": "MR_T1->MR_T2", "method": "model", "PSNR_whole": 20.0}],
    }
    bundle = export_final(
        config, tmp_path / "cv", tmp_path / "bundle", summary, subjects_of(config), command="c", log=print,
        device="cpu",
    )  # fmt: skip
    bundle = load_bundle(bundle.path)
    assert bundle.pairs == [("MR_T1", "MR_T2")]
    assert bundle.supports_sources(["MR_PD", "MR_T1"], "MR_T2") and not bundle.supports_sources(["MR_T2"], "MR_T1")
    assert bundle.metadata["metrics"]["crossval"]["listing_rule"] == "r"
    assert bundle.metadata["metrics"]["crossval"]["rows"] == summary["rows"]  # per subject, for later comparisons
    assert bundle.metadata["training"]["train_cases"] == ["case0", "case1", "case2"]
    assert bundle.metadata["output_mask"] == "source_nonzero" and bundle.metadata["grid"] is None
    assert bundle.metadata["normalisation"]["mr_scheme"] == "brain_percentiles"


def test_each_loader_worker_draws_its_own_slices_and_crops(tmp_path):
    from medtrans_training.trainer import Trainer

    root = write_simple_cases(tmp_path / "cases", count=1, size=20, names=("t1", "t2"))
    config = slice_config(root, batch_size=1, num_workers=2)
    config["data"]["repeats"] = 64
    trainer = Trainer(config, tmp_path / "run", device="cpu", command="test")
    trainer._setup()
    batches = iter(trainer.loader)
    items = [next(batches)["images"] for _ in range(4)]  # workers take turns: 0, 1, 0, 1
    # One case only, so without per-worker seeds both workers would draw the same slices, crops and flips.
    assert not (torch.equal(items[0], items[1]) and torch.equal(items[2], items[3]))
