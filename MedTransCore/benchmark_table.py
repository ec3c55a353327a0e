"""Markdown tables of benchmark rows (:func:`MedTransCore.benchmark.run_benchmark`): speed and memory, ALDM
quality versus sampler and steps, and each target met or missed by how much."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: The sampler target: this speed-up over DDIM 200 ...
TARGET_SPEEDUP = 10.0
#: ... losing at most this much PSNR against the real target relative to DDIM 200's result.
MAX_PSNR_LOSS_DB = 0.3


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
    """Markdown tables of benchmark rows: speed and memory, then ALDM quality per sampler and steps, then targets."""
    speed = [r for r in rows if r.get("kind", "speed") in ("speed", "memory")]
    quality = [r for r in rows if r.get("kind") == "quality"]
    lines = ["## Speed and memory per volume (whole pipeline, fresh process per row)", ""]
    lines += _markdown(
        speed,
        ("family", "model", "pair", "grid", "steps", "sampler", "device", "seconds", "warm_seconds", "cpu_seconds")
        + ("load_average", "peak_memory_mb", "memory_delta_mb"),
    )
    lines.append(
        "(seconds: the first translation of a fresh process, imports and model loading included; warm_seconds: the "
        "same translation again in that process, as an open Slicer or browser session pays it; cpu_seconds: CPU time "
        "of all threads; load_average: the machine's 1-minute load when the row started; other processes competing "
        "for the cores inflate seconds)"
    )
    if quality:
        lines += ["", "## ALDM quality versus sampler and steps (PSNR/SSIM in the body mask)", ""]
        lines += _markdown(
            quality,
            (
                "model",
                "grid",
                "sampler",
                "steps",
                "seconds",
                "speedup_vs_200",
                "cpu_speedup_vs_200",
                "psnr_vs_200",
                "ssim_vs_200",
                "psnr_vs_reference",
                "ssim_vs_reference",
                "psnr_loss_db",
                "default",
            ),
        )
        lines.append(
            "(speed-ups: the reference run's wall / CPU seconds over this run's, rows measured one after the other; "
            "psnr_loss_db: the reference run's PSNR against the real target minus this run's, positive = worse)"
        )
        lines += _quality_lines(quality)
    lines += _target_lines(speed)
    from .benchmark_memory import estimate_table  # the memory guard's estimate versus the measured peak

    lines += estimate_table(rows)
    return "\n".join(lines) + "\n"


def _run_name(row: dict[str, Any]) -> str:
    return f"{row.get('sampler') or 'ddim'} {row['steps']}"


def _quality_lines(quality: list[dict[str, Any]]) -> list[str]:
    """Per model and grid: the default run, and the fastest run within :data:`MAX_PSNR_LOSS_DB` of the reference."""
    lines = []
    for key in dict.fromkeys((r["model"], r["grid"]) for r in quality):
        rows = [r for r in quality if (r["model"], r["grid"]) == key]
        ref = f"{rows[0].get('reference_sampler') or 'ddim'} {rows[0]['reference_steps']}"
        where = f"- {key[0]} at {key[1]}^3"
        for r in rows:
            if r.get("default"):
                lines.append(
                    f"{where}: the default ({_run_name(r)}) is {r['speedup_vs_200']:.1f}x faster than {ref}, "
                    f"PSNR {_cell(r.get('psnr_vs_200'))} dB against it, {_loss(r)} against the truth"
                )
        close = [r for r in rows if r.get("psnr_loss_db") is not None and r["psnr_loss_db"] <= MAX_PSNR_LOSS_DB]
        if close:
            best = max(close, key=lambda r: r["speedup_vs_200"])
            verdict = "met" if best["speedup_vs_200"] >= TARGET_SPEEDUP else "MISSED"
            lines.append(
                f"{where}: fastest within {MAX_PSNR_LOSS_DB} dB of {ref} against the truth: {_run_name(best)}, "
                f"{best['speedup_vs_200']:.1f}x wall / {_ratio(best.get('cpu_speedup_vs_200'))} CPU "
                f"(target {TARGET_SPEEDUP:.0f}x: {verdict})"
            )
    refs = {r["reference_steps"] for r in quality}
    if refs != {200}:
        lines.append(f"(the comparison reference here is {', '.join(map(str, sorted(refs)))} steps, not 200)")
    return lines


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def _loss(row: dict[str, Any]) -> str:
    loss = row.get("psnr_loss_db")
    if loss is None:
        return "PSNR loss unknown"
    return f"{loss:.2f} dB PSNR loss" if loss >= 0 else f"{-loss:.2f} dB PSNR gain"


def _target_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for r in rows:
        where = f"- {r['model']} at {r['grid']}" + ("^3" if isinstance(r["grid"], int) else "") + f" on {r['device']}"
        if r.get("target_seconds") is not None:
            verdict = "met" if r["target_met"] else f"MISSED by {r['target_missed_by_s']:.1f} s"
            warm = f", {r['warm_seconds']:.1f} s warm" if r.get("warm_seconds") is not None else ""
            lines.append(f"{where}: {r['seconds']:.1f} s{warm} (target {r['target_seconds']:.0f} s): {verdict}")
        elif r.get("target_memory_mb") is not None:
            verdict = "met" if r["target_met"] else f"MISSED by {r['target_missed_by_mb']:.0f} MB"
            peak = f"{r['peak_memory_mb']:.0f} MB peak"
            lines.append(f"{where}: {peak} (target {r['target_memory_mb']:.0f} MB): {verdict}")
    return ["", "## Targets", "", *lines] if lines else []
