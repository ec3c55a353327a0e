"""The benchmark in its quick mode: row structure, JSON, the table (no timing assertions)."""

from __future__ import annotations

import json

import pytest

from MedTransCore.benchmark import run_benchmark
from MedTransCore.benchmark_table import format_table
from MedTransCore.errors import InputError
from Testing.Core.test_aldm_translator import tiny_aldm_bundle

SPEED_KEYS = {"kind", "family", "model", "grid", "steps", "device", "seconds", "peak_memory_mb", "memory_delta_mb"}
QUALITY_KEYS = SPEED_KEYS | {"psnr_vs_200", "ssim_vs_200", "psnr_vs_reference", "ssim_vs_reference", "speedup_vs_200"}


@pytest.mark.slow
def test_a_quick_benchmark_gives_speed_memory_and_quality_rows_a_json_list_and_a_table(isolated_user_models):
    bundle = tiny_aldm_bundle(isolated_user_models / "tiny-aldm", default_steps=2)
    seen = []
    rows = run_benchmark(quick=True, models=[str(bundle.path)], progress=lambda f, words: seen.append(f))
    speed = [r for r in rows if r["kind"] == "speed"]
    memory = [r for r in rows if r["kind"] == "memory"]
    quality = [r for r in rows if r["kind"] == "quality"]
    assert [r["kind"] for r in rows] == ["speed", "memory", "quality", "quality"]
    assert memory[0]["grid"] == "16x16x8" and memory[0]["target_memory_mb"] == 4096.0 and memory[0]["target_met"]
    assert len(speed) == 1 and speed[0]["grid"] == 16 and speed[0]["steps"] == 1 and speed[0]["device"] == "cpu"
    assert SPEED_KEYS <= set(speed[0]) and speed[0]["seconds"] > 0 and speed[0]["peak_memory_mb"] > 0
    assert [r["steps"] for r in quality] == [1, 2]
    assert all(QUALITY_KEYS <= set(r) for r in quality)
    top = quality[-1]
    assert top["psnr_vs_200"] is None and top["speedup_vs_200"] == 1.0 and top["default"]  # itself: identical
    assert quality[0]["psnr_vs_reference"] is not None
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert json.loads(json.dumps(rows)) == rows
    table = format_table(rows)
    assert "## Speed and memory" in table and "## ALDM quality" in table and "tiny-aldm" in table
    assert "reference here is 2 steps" in table
    assert "tiny-aldm at 16x16x8 on cpu" in table and "(target 4096 MB): met" in table


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
