"""Markdown tables of benchmark rows (:func:`MedTransCore.benchmark.run_benchmark`): speed and memory, ALDM
quality versus steps, and each target met or missed by how much."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _markdown(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown tables of benchmark rows: speed and memory, then ALDM quality versus steps, then the targets."""
    speed = [r for r in rows if r.get("kind", "speed") in ("speed", "memory")]
    quality = [r for r in rows if r.get("kind") == "quality"]
    lines = ["## Speed and memory per volume (whole pipeline, fresh process per row)", ""]
    lines += _markdown(
        speed,
        ("family", "model", "pair", "grid", "steps", "device", "seconds", "cpu_seconds", "load_average")
        + ("peak_memory_mb", "memory_delta_mb"),
    )
    lines.append(
        "(cpu_seconds: CPU time of all threads; load_average: the machine's 1-minute load when the row started; "
        "other processes competing for the cores inflate seconds)"
    )
    if quality:
        lines += ["", "## ALDM quality versus DDIM steps (PSNR/SSIM in the body mask)", ""]
        lines += _markdown(
            quality,
            (
                "model",
                "grid",
                "steps",
                "seconds",
                "speedup_vs_200",
                "psnr_vs_200",
                "ssim_vs_200",
                "psnr_vs_reference",
                "ssim_vs_reference",
                "default",
            ),
        )
        for r in quality:
            if r["default"]:
                lines.append(
                    f"- {r['model']}: the shipped default ({r['steps']} steps) is {r['speedup_vs_200']:.1f}x faster "
                    f"than ALDM's DDIM {r['reference_steps']}, PSNR {_cell(r['psnr_vs_200'])} dB against it"
                )
        refs = {r["reference_steps"] for r in quality}
        if refs != {200}:
            lines.append(f"(the comparison reference here is {', '.join(map(str, sorted(refs)))} steps, not 200)")
    lines += _target_lines(speed)
    return "\n".join(lines) + "\n"


def _target_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        where = f"- {r['model']} at {r['grid']}" + ("^3" if isinstance(r["grid"], int) else "") + f" on {r['device']}"
        if r.get("target_seconds") is not None:
            verdict = "met" if r["target_met"] else f"MISSED by {r['target_missed_by_s']:.1f} s"
            lines.append(f"{where}: {r['seconds']:.1f} s (target {r['target_seconds']:.0f} s): {verdict}")
        elif r.get("target_memory_mb") is not None:
            verdict = "met" if r["target_met"] else f"MISSED by {r['target_missed_by_mb']:.0f} MB"
            peak = f"{r['peak_memory_mb']:.0f} MB peak"
            lines.append(f"{where}: {peak} (target {r['target_memory_mb']:.0f} MB): {verdict}")
    return ["", "## Targets", "", *lines] if lines else []
