"""The benchmark in its quick mode: row structure, JSON, the table (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from MedTransCore.benchmark import QUALITY_GRIDS, QUALITY_RUNS, run_benchmark
from MedTransCore.benchmark_table import format_table
from MedTransCore.errors import InputError
from Testing.Core.test_aldm_translator import tiny_aldm_bundle

SPEED_KEYS = {"kind", "family", "model", "grid", "steps", "device", "seconds", "peak_memory_mb", "memory_delta_mb"}
QUALITY_KEYS = SPEED_KEYS | {"psnr_vs_200", "ssim_vs_200", "psnr_vs_reference", "ssim_vs_reference", "speedup_vs_200"}
QUALITY_KEYS |= {"sampler", "psnr_loss_db", "cpu_speedup_vs_200"}


@pytest.mark.slow
def test_a_quick_benchmark_gives_speed_memory_and_quality_rows_a_json_list_and_a_table(isolated_user_models):
    bundle = tiny_aldm_bundle(isolated_user_models / "tiny-aldm", default_steps=2)
    seen = []
    rows = run_benchmark(quick=True, models=[str(bundle.path)], progress=lambda f, words: seen.append(f))
    speed = [r for r in rows if r["kind"] == "speed"]
    memory = [r for r in rows if r["kind"] == "memory"]
    quality = [r for r in rows if r["kind"] == "quality"]
    assert [r["kind"] for r in rows] == ["speed", "memory", "quality", "quality", "quality"]
    assert memory[0]["grid"] == "16x16x8" and memory[0]["target_memory_mb"] == 4096.0 and memory[0]["target_met"]
    assert len(speed) == 1 and speed[0]["grid"] == 16 and speed[0]["steps"] == 1 and speed[0]["device"] == "cpu"
    assert SPEED_KEYS <= set(speed[0]) and speed[0]["seconds"] > 0 and speed[0]["peak_memory_mb"] > 0
    assert [(r["sampler"], r["steps"]) for r in quality] == [("ddim", 1), ("ddim", 2), ("dpmpp", 1)]
    assert all(QUALITY_KEYS <= set(r) for r in quality)
    top = quality[1]
    assert top["psnr_vs_200"] is None and top["speedup_vs_200"] == 1.0 and top["default"]  # itself: identical
    assert top["psnr_loss_db"] == 0.0 and top["reference_sampler"] == "ddim"
    assert quality[0]["psnr_vs_reference"] is not None
    # One step of either solver is the same x0 prediction from the same noise: the same image, at any grid.
    assert quality[2]["psnr_vs_reference"] == pytest.approx(quality[0]["psnr_vs_reference"], abs=0.01)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert json.loads(json.dumps(rows)) == rows
    table = format_table(rows)
    assert "## Speed and memory" in table and "## ALDM quality" in table and "tiny-aldm" in table
    assert "reference here is 2 steps" in table and "| dpmpp | 1 |" in table
    assert "tiny-aldm at 16^3: fastest within 0.3 dB of ddim 2 against the truth" in table
    assert "tiny-aldm at 16x16x8 on cpu" in table and "(target 4096 MB): met" in table


@pytest.mark.slow
def test_the_quality_rows_cover_the_128_grid_with_speed_up_and_psnr_loss_per_sampler(isolated_user_models):
    assert 128 in QUALITY_GRIDS and ("ddim", 200) in QUALITY_RUNS and any(s == "dpmpp" for s, _ in QUALITY_RUNS)
    bundle = tiny_aldm_bundle(isolated_user_models / "tiny-aldm", default_steps=2)
    rows = run_benchmark(quick=True, models=[str(bundle.path)], grids=(), memory=False, quality_grids=(128,))
    assert {r["kind"] for r in rows} == {"quality"} and {r["grid"] for r in rows} == {128}
    by_run = {(r["sampler"], r["steps"]): r for r in rows}
    assert set(by_run) == {("ddim", 1), ("ddim", 2), ("dpmpp", 1)}
    for r in rows:
        assert r["speedup_vs_200"] > 0 and r["cpu_speedup_vs_200"] > 0 and r["psnr_loss_db"] is not None
    table = format_table(rows)
    assert "tiny-aldm at 128^3: the default (ddim 2)" in table and "| 128 | dpmpp | 1 |" in table


def test_quality_runs_without_a_ddim_reference_are_refused_before_any_measurement(isolated_user_models):
    bundle = tiny_aldm_bundle(isolated_user_models / "tiny-aldm", default_steps=None)
    with pytest.raises(ValueError, match="ddim run"):
        run_benchmark(
            models=[str(bundle.path)], grids=(), memory=False, quality_grids=(8,), quality_runs=[("dpmpp", 1)]
        )


def test_the_quality_table_names_the_fastest_run_within_0_3_db_and_the_10x_target():
    base = {"kind": "quality", "model": "m", "grid": 128, "reference_sampler": "ddim", "reference_steps": 200}
    rows = [
        base | {"sampler": "ddim", "steps": 200, "speedup_vs_200": 1.0, "cpu_speedup_vs_200": 1.0, "psnr_loss_db": 0.0},
        base | {"sampler": "ddim", "steps": 10, "speedup_vs_200": 8.4, "psnr_loss_db": 0.1, "default": True},
        base
        | {"sampler": "dpmpp", "steps": 5, "speedup_vs_200": 12.5, "cpu_speedup_vs_200": 13.0, "psnr_loss_db": 0.2},
        base | {"sampler": "dpmpp", "steps": 3, "speedup_vs_200": 16.0, "psnr_loss_db": 0.9},
    ]
    rows[1] |= {"psnr_vs_200": 24.3, "cpu_speedup_vs_200": 9.0}
    table = format_table(rows)
    assert "m at 128^3: fastest within 0.3 dB of ddim 200 against the truth: dpmpp 5, 12.5x wall" in table
    assert "(target 10x: met)" in table
    assert "m at 128^3: the default (ddim 10) is 8.4x faster than ddim 200, PSNR 24.3 dB against it" in table
    rows[2]["psnr_loss_db"] = 0.5
    assert "fastest within 0.3 dB of ddim 200 against the truth: ddim 10, 8.4x wall / 9.0x CPU" in format_table(rows)
    assert "(target 10x: MISSED)" in format_table(rows)


def test_an_empty_selection_is_an_input_error():
    with pytest.raises(InputError):
        run_benchmark(quick=True, families=["no-such-family"])


def test_the_table_reports_a_missed_target_and_by_how_much():
    row = {"kind": "speed", "family": "aldm", "model": "m", "pair": "MR_T1->CT", "grid": 128, "steps": 10}
    row |= {"device": "cpu", "seconds": 42.0, "peak_memory_mb": 900.0, "memory_delta_mb": 500.0}
    row |= {"target_seconds": 30.0, "target_met": False, "target_missed_by_s": 12.0}
    assert "MISSED by 12.0 s" in format_table([row])


def test_the_table_reports_a_missed_memory_target_and_by_how_much():
    row = {"kind": "memory", "family": "unet", "model": "m", "pair": "CBCT->CT", "grid": "256x256x160", "steps": None}
    row |= {"device": "cpu", "seconds": 60.0, "peak_memory_mb": 5000.0, "memory_delta_mb": 4000.0}
    row |= {"target_memory_mb": 4096.0, "target_met": False, "target_missed_by_mb": 904.0}
    assert "m at 256x256x160 on cpu: 5000 MB peak (target 4096 MB): MISSED by 904 MB" in format_table([row])


def test_a_skull_stripped_benchmark_phantom_is_zero_outside_its_brain_and_its_mask_is_the_brain(tmp_path):
    import SimpleITK as sitk

    from MedTransCore.benchmark import _Phantoms

    phantoms = _Phantoms(tmp_path)
    whole = phantoms.get((24, 24, 16), (3.0, 3.0, 3.0), ("MR_T1", "MR_T2"))
    stripped = phantoms.get((24, 24, 16), (3.0, 3.0, 3.0), ("MR_T1", "MR_T2"), skull_stripped=True)
    assert whole["source"] != stripped["source"]
    brain = sitk.GetArrayFromImage(sitk.ReadImage(str(stripped["mask"]))) > 0
    body = sitk.GetArrayFromImage(sitk.ReadImage(str(whole["mask"]))) > 0
    assert 0 < brain.sum() < body.sum()
    for role in ("source", "reference"):
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(stripped[role])))
        assert (image[~brain] == 0).all() and (image[brain] != 0).any()
        assert (sitk.GetArrayFromImage(sitk.ReadImage(str(whole[role])))[body & ~brain] != 0).any()


def test_the_table_gives_the_warm_time_beside_the_first_translation_and_judges_the_first():
    row = {"kind": "speed", "family": "slice_unet", "model": "m", "pair": "MR_T1->MR_T2", "grid": "240x240x155"}
    row |= {"steps": None, "device": "cpu", "seconds": 11.0, "warm_seconds": 5.0, "peak_memory_mb": 900.0}
    row |= {"memory_delta_mb": 500.0, "target_seconds": 10.0, "target_met": False, "target_missed_by_s": 1.0}
    table = format_table([row])
    assert "m at 240x240x155 on cpu: 11.0 s, 5.0 s warm (target 10 s): MISSED by 1.0 s" in table
    assert "| warm_seconds |" in table and "| 11.0 | 5.000 |" in table
