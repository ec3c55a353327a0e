"""``medtrans benchmark --dose``: how long a dose check takes, and the physicist's version of the demo table.

On held-out head phantoms (seeds outside every shipped model's training and validation seeds), at the demo's grid
(64^3 voxels of 3 mm), one photon plan is optimised on the CT and recomputed on three candidates for a synthetic
CT: the CBCT as it is, its histogram matched to CT (the ``histogram-matching`` bundle), and the model the default
choice runs for CBCT -> CT. Each gets the gamma pass rates and the target's DVH differences. The time of one whole
dose check (plan + recompute + gamma) is reported against its target.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from .dose import PlanSettings, check_with_plan, make_plan
from .phantoms import generate_phantom

DOSE_SHAPE, DOSE_SPACING = (64, 64, 64), (3.0, 3.0, 3.0)
#: Held out: outside the shipped models' training (0-47) and validation (1000-1003) seeds.
DOSE_SEEDS = (4242, 4243, 4244)
#: One dose check (plan, recompute, gamma) of the demo phantom at 3 mm on this CPU.
DOSE_TARGET_SECONDS = 120.0
#: ``(method, bundle)``: ``None`` is the CBCT itself; ``"auto"`` the default choice of model.
METHODS = (("CBCT as is", None), ("histogram matching", "histogram-matching"), ("model", "auto"))


def dose_benchmark(
    seeds: tuple[int, ...] = DOSE_SEEDS,
    *,
    shape: tuple[int, int, int] = DOSE_SHAPE,
    spacing: tuple[float, float, float] = DOSE_SPACING,
    settings: PlanSettings | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[dict]:
    """One row per phantom and method: gamma pass rates (%), the target's DVH differences (Gy), the seconds."""
    from .translate import translate_image

    settings = settings or PlanSettings(dose_grid_mm=spacing[0])
    report = progress or (lambda fraction, stage: None)
    rows = []
    for index, seed in enumerate(seeds):
        report(index / len(seeds), f"phantom {seed}: planning on the CT")
        case = generate_phantom("head", seed, shape, spacing, modalities=["CT", "CBCT"])
        start = time.perf_counter()
        plan = make_plan(case.images["CT"], settings=settings)
        planning = time.perf_counter() - start
        for method, model in METHODS:
            report((index + 0.5) / len(seeds), f"phantom {seed}: {method}")
            if model is None:
                sct, name = case.images["CBCT"], "-"
            else:
                result = translate_image(
                    case.images["CBCT"], "CBCT", "CT", model=None if model == "auto" else model, device="cpu"
                )
                sct, name = result.image, result.settings["model"]
            start = time.perf_counter()
            check = check_with_plan(plan, sct)
            target = check.dvh["TARGET"]
            rows.append(
                {
                    "kind": "dose",
                    "seed": seed,
                    "grid": "x".join(map(str, shape)),
                    "spacing_mm": spacing[0],
                    "method": method,
                    "model": name,
                    "gamma_pass_rate": check.pass_rates,
                    "target_d95_difference_gy": target["D95"]["difference"],
                    "target_dmean_difference_gy": target["Dmean"]["difference"],
                    "prescription_gy": settings.prescription_gy,
                    "beams": settings.beams,
                    "plan_seconds": round(planning, 2),
                    "recompute_and_gamma_seconds": round(time.perf_counter() - start, 2),
                }
            )
    report(1.0, "dose benchmark done")
    return rows


def format_dose_table(rows: list[dict]) -> str:
    """Markdown: mean (worst) pass rates and DVH differences per method, then the time of one dose check."""
    lines = [
        f"## Dose check on held-out head phantoms ({len({r['seed'] for r in rows})} phantoms, "
        f"{rows[0]['grid']} voxels of {rows[0]['spacing_mm']:g} mm, {rows[0]['beams']} beams, "
        f"{rows[0]['prescription_gy']:g} Gy test target)",
        "",
        "| method | model | gamma 1%/1mm | gamma 2%/2mm | gamma 3%/3mm | target ΔD95 (Gy) | target ΔDmean (Gy) |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        cells = []
        for criterion in ("1%/1mm", "2%/2mm", "3%/3mm"):
            rates = [r["gamma_pass_rate"][criterion] for r in mine]
            cells.append(f"{np.mean(rates):.1f} % (min {min(rates):.1f})")
        for key in ("target_d95_difference_gy", "target_dmean_difference_gy"):
            values = [r[key] for r in mine]
            cells.append(f"{np.mean(values):+.2f} (worst {max(values, key=abs):+.2f})")
        models = ", ".join(dict.fromkeys(r["model"] for r in mine))
        lines.append(f"| {method} | {models} | " + " | ".join(cells) + " |")
    lines.append(
        "(gamma: global, 10 % low-dose threshold, mean over the phantoms and the worst; Δ = dose on the candidate "
        "minus dose on the CT, with the plan optimised on the CT)"
    )
    first = [r for r in rows if r["method"] == rows[0]["method"]]
    seconds = max(r["plan_seconds"] + r["recompute_and_gamma_seconds"] for r in first)
    verdict = "met" if seconds <= DOSE_TARGET_SECONDS else f"MISSED by {seconds - DOSE_TARGET_SECONDS:.0f} s"
    lines += [
        "",
        "## Targets",
        "",
        f"- one dose check (plan + recompute + gamma) at {rows[0]['spacing_mm']:g} mm: {seconds:.0f} s, the slowest "
        f"phantom (target {DOSE_TARGET_SECONDS:.0f} s): {verdict}",
    ]
    return "\n".join(lines) + "\n"
