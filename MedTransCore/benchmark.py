"""Benchmark: seconds and peak memory per volume for every installed model, and ALDM's quality versus steps.

Every row runs ``translate_image`` on a head phantom in a *fresh subprocess*, so the whole pipeline is timed
(model loading, preprocessing, sliding windows, sampling, resampling back) and the memory is that process's
own: ``peak_memory_mb`` is its peak resident set (``getrusage`` ``ru_maxrss``, imports included) and
``memory_delta_mb`` the part added by the translation (peak minus the resident set just before it). The
phantom is simulated at the bundle's spacing, so ``grid`` is the voxel grid the model really processes.

For ``aldm`` bundles a quality table translates one phantom at 64^3 and at the 128^3 target grid with each
sampler and step count of :data:`QUALITY_RUNS` (DDIM 5-200, DPM-Solver++ 3-20; ALDM's own default is DDIM 200)
and compares each result with the DDIM-200 one and with the phantom's real target
(``MedTransCore.metrics.compute_metrics`` in the body mask). Each row gives its speed-up over DDIM 200 (wall
and CPU seconds, rows run one after the other) and its PSNR loss against the truth relative to DDIM 200's
(``psnr_loss_db``, positive = worse). A memory row per model translates a 256x256x160 volume (at the bundle's
spacing, so the sliding windows really cover that grid). Targets: a 128^3 grid within 30 s on a CPU and 1 s on
a CUDA GPU, the 256x256x160 volume within 4 GB of peak memory; rows say by how much they miss. ``quick=True``
is a smoke run (a 16^3 grid, a 16x16x8 memory volume, DDIM 1 and 2 steps, DPM-Solver++ 1 step) for tests.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .bundles import Bundle, find_bundle, installed_bundles
from .errors import InputError

StageProgress = Callable[[float, str], None]
#: Seconds per volume the design aims for, by device and grid edge.
TARGET_SECONDS = {"cpu": {128: 30.0}, "cuda": {128: 1.0}}
#: The memory target: a volume of this size (x, y, z voxels) translated within this peak resident memory.
MEMORY_SHAPE = (256, 256, 160)
MEMORY_TARGET_MB = 4096.0
QUICK_MEMORY_SHAPE = (16, 16, 8)
#: Brain MR bundles (``domain.anatomy == "brain"``) also translate one volume of the BraTS grid (x, y, z), with
#: their own time target per device. For a bundle made for skull-stripped input the phantom is skull-stripped too
#: (everything but its brain tissues set to 0), so the row measures the input the bundle is made for. The row is
#: timed twice in one process: ``seconds`` (the first translation, imports and model loading included, as a CLI
#: call pays them) and ``warm_seconds`` (the same translation again, as an open Slicer or browser session pays it).
BRAIN_SHAPE = (240, 240, 155)
BRAIN_TARGET_SECONDS = {"cpu": 10.0}
#: Phantom labels kept by skull stripping: CSF, grey and white matter, and the lesion compartments.
BRAIN_LABELS = ("csf", "grey_matter", "white_matter", "lesion", "necrosis", "oedema")
#: (sampler, steps) of the quality rows; the DDIM run with the most steps is the reference.
QUALITY_RUNS = (
    ("ddim", 5),
    ("ddim", 10),
    ("ddim", 20),
    ("ddim", 50),
    ("ddim", 200),
    ("dpmpp", 3),
    ("dpmpp", 5),
    ("dpmpp", 10),
    ("dpmpp", 20),
)
QUALITY_GRIDS = (64, 128)
QUICK_GRID = 16
QUICK_RUNS = (("ddim", 1), ("ddim", 2), ("dpmpp", 1))
#: Phantom seed of the benchmark: outside the shipped models' training (0-47) and validation (1000-1003) seeds.
PHANTOM_SEED = 4242
#: Preferred benchmark pair of a bundle, first supported wins (else the bundle's first pair).
PREFERRED_PAIRS = (("MR_T1", "CT"), ("CBCT", "CT"), ("MR_T1", "MR_T2"))
FAMILY_ORDER = ("identity", "histogram_matching", "unet", "slice_unet", "vid2vid", "vae_transformer", "aldm", "s2ldm")


def _benchmark_pair(bundle: Bundle) -> tuple[str, str]:
    for pair in PREFERRED_PAIRS:
        if bundle.supports(*pair):
            return pair
    return bundle.pairs[0]


def _is_brain(bundle: Bundle) -> bool:
    return (bundle.metadata.get("domain") or {}).get("anatomy") == "brain"


def _wants_skull_stripped(bundle: Bundle) -> bool:
    return (bundle.metadata.get("domain") or {}).get("preprocessing") == "skull-stripped"


def _spacing(bundle: Bundle) -> tuple[float, float, float]:
    spacing = bundle.metadata.get("spacing") or [3.0, 3.0, 3.0]
    return tuple(float(s) for s in spacing)


def _resolve_device(device: str) -> str:
    from .translate import resolve_device  # torch is imported only when a benchmark runs

    return resolve_device(device).type


def _selected_bundles(families: Sequence[str] | None, models: Sequence[str] | None) -> list[Bundle]:
    bundles = [find_bundle(m) for m in models] if models else installed_bundles()
    if families is not None:
        bundles = [b for b in bundles if b.family in families]
    if not bundles:
        raise InputError("no installed model matches the benchmark selection; see `medtrans models`")
    return sorted(bundles, key=lambda b: (FAMILY_ORDER.index(b.family) if b.family in FAMILY_ORDER else 99, b.name))


class _Phantoms:
    """Phantom source / reference / mask files per (shape, spacing, pair), written once into ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[tuple, dict[str, Path]] = {}

    def get(
        self,
        shape: int | tuple[int, int, int],
        spacing: tuple[float, ...],
        pair: tuple[str, str],
        skull_stripped: bool = False,
    ) -> dict:
        """Files of the phantom of ``shape`` (a cube edge or x, y, z voxels); ``skull_stripped``: only its brain."""
        shape = (shape,) * 3 if isinstance(shape, int) else tuple(shape)
        key = (shape, spacing, pair, skull_stripped)
        if key not in self.made:
            from .phantoms import generate_phantom

            case = generate_phantom("head", PHANTOM_SEED, shape, spacing, modalities=list(pair))
            mask = case.body_mask
            if skull_stripped:
                brain = [label for label, name in case.label_names.items() if name in BRAIN_LABELS]
                mask = sitk.Cast(_label_mask(case.labels, brain), sitk.sitkUInt8)
            stem = self.folder / f"phantom-{len(self.made)}"
            paths = {"source": Path(f"{stem}-source.mha"), "reference": Path(f"{stem}-reference.mha")}
            paths["mask"] = Path(f"{stem}-mask.mha")
            for role, key_ in (("source", pair[0]), ("reference", pair[1])):
                image = case.images[key_]
                if skull_stripped:
                    image = sitk.Mask(image, mask)
                sitk.WriteImage(image, str(paths[role]))
            sitk.WriteImage(mask, str(paths["mask"]))
            self.made[key] = paths
        return self.made[key]


def _label_mask(labels: sitk.Image, keep: list[int]) -> sitk.Image:
    """0/1 image of the voxels of ``labels`` whose label is in ``keep``."""
    array = np.isin(sitk.GetArrayViewFromImage(labels), keep).astype(np.uint8)
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(labels)
    return mask


def _measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one translation in a fresh interpreter (see :func:`_worker`); returns its measurements."""
    command = [sys.executable, "-c", "from MedTransCore.benchmark import _worker; _worker()"]
    done = subprocess.run(
        command, input=json.dumps(spec), capture_output=True, encoding="utf-8", errors="replace", env=os.environ.copy()
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"benchmark run of {spec['model']} failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _worker() -> None:
    """Subprocess entry: read a JSON spec on stdin, translate once, print one JSON line of measurements."""
    spec = json.loads(sys.stdin.read())
    import torch

    from .translate import translate_image

    image = sitk.ReadImage(spec["source"], sitk.sitkFloat32)
    before = _rss_mb()
    load = os.getloadavg()[0]

    def translate() -> Any:
        result = translate_image(
            image,
            spec["source_modality"],
            spec["target_modality"],
            model=spec["model"],
            steps=spec["steps"],
            sampler=spec.get("sampler"),
            seed=0,
            device=spec["device"],
        )
        if spec["device"] == "cuda":
            torch.cuda.synchronize()
        return result

    start, cpu_start = time.perf_counter(), time.process_time()
    result = translate()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    warm_seconds = None
    if spec.get("warm"):  # the same translation again: what an open session pays per volume
        warm_start = time.perf_counter()
        translate()
        warm_seconds = time.perf_counter() - warm_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux
    if spec.get("output"):
        sitk.WriteImage(result.image, spec["output"])
    out = {
        "seconds": seconds,
        "warm_seconds": warm_seconds,
        "cpu_seconds": cpu_seconds,
        "load_average": load,
        "peak_memory_mb": peak,
        "memory_delta_mb": max(peak - before, 0.0),
        "steps": result.settings["steps"],
        "sampler": result.settings.get("sampler"),
        "threads": torch.get_num_threads(),
    }
    if spec["device"] == "cuda":
        out["peak_gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(out))


def _target_fields(grid: int, device: str, seconds: float) -> dict[str, Any]:
    target = TARGET_SECONDS.get(device, {}).get(grid)
    if target is None:
        return {"target_seconds": None, "target_met": None, "target_missed_by_s": None}
    return {
        "target_seconds": target,
        "target_met": seconds <= target,
        "target_missed_by_s": round(max(seconds - target, 0.0), 2),
    }


def _memory_target_fields(peak_mb: float) -> dict[str, Any]:
    return {
        "target_memory_mb": MEMORY_TARGET_MB,
        "target_met": peak_mb <= MEMORY_TARGET_MB,
        "target_missed_by_mb": round(max(peak_mb - MEMORY_TARGET_MB, 0.0), 1),
    }


def _spec(
    bundle: Bundle,
    files: dict[str, Path],
    device: str,
    steps: int | None,
    output: Path | None = None,
    sampler: str | None = None,
    warm: bool = False,
) -> dict:
    """What :func:`_worker` runs: the phantom source of ``files`` through ``bundle`` on its benchmark pair."""
    source_modality, target_modality = _benchmark_pair(bundle)
    spec = {
        "source": str(files["source"]),
        "source_modality": source_modality,
        "target_modality": target_modality,
        "model": str(bundle.path),
        "steps": steps,
        "sampler": sampler,
        "device": device,
        "warm": warm,
    }
    return spec | ({"output": str(output)} if output is not None else {})


def _timed_row(
    kind: str, bundle: Bundle, files: dict[str, Path], grid: Any, device: str, steps: int | None, warm: bool = False
) -> dict:
    """Translate the phantom ``files`` with ``bundle`` in a fresh process (``warm``: twice); its measurements."""
    pair = _benchmark_pair(bundle)
    measured = _measure(_spec(bundle, files, device, steps, warm=warm))
    extra = {"peak_gpu_memory_mb": round(measured["peak_gpu_memory_mb"], 1)} if "peak_gpu_memory_mb" in measured else {}
    if measured.get("warm_seconds") is not None:
        extra["warm_seconds"] = round(measured["warm_seconds"], 3)
    return {
        "kind": kind,
        "family": bundle.family,
        "model": bundle.name,
        "pair": f"{pair[0]}->{pair[1]}",
        "grid": grid,
        "steps": measured["steps"],
        "sampler": measured.get("sampler"),
        "device": device,
        "seconds": round(measured["seconds"], 3),
        "cpu_seconds": round(measured["cpu_seconds"], 3),
        "peak_memory_mb": round(measured["peak_memory_mb"], 1),
        "memory_delta_mb": round(measured["memory_delta_mb"], 1),
        "threads": measured["threads"],
        "load_average": round(measured["load_average"], 2),
        **extra,
    }


def _finite(value: float) -> float | None:
    """JSON-safe float: ``inf``/``nan`` (identical or constant volumes) become ``None``."""
    return float(value) if value is not None and math.isfinite(value) else None


def _bundle_default_run(bundle: Bundle) -> tuple[str, int] | None:
    sampler = bundle.metadata.get("sampler") or {}
    steps = sampler.get("default_steps")
    return (sampler.get("scheduler", "ddim"), int(steps)) if steps else None


def _quality_rows(
    bundle: Bundle, files: dict[str, Path], grid: int, device: str, runs: Sequence[tuple[str, int]], report
) -> list[dict[str, Any]]:
    """Translate the phantom ``files`` once per ``(sampler, steps)`` run; rows of quality and speed-up.

    The reference is the DDIM run with the most steps (DDIM 200 in a full run); the bundle's default run is
    added when missing.

    Raises:
        ValueError: ``runs`` has no DDIM run (nothing to compare with).
    """
    from .metrics import compute_metrics

    source_modality, target_modality = _benchmark_pair(bundle)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(files["mask"]))) > 0
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(files["reference"]))).astype(np.float64)
    default = _bundle_default_run(bundle)
    runs = sorted({*runs, *([default] if default else [])}, key=lambda r: (r[0] != "ddim", r[0], r[1]))
    ddim = [r for r in runs if r[0] == "ddim"]
    if not ddim:
        raise ValueError("the quality runs need at least one ddim run: it is the reference")
    top = max(ddim, key=lambda r: r[1])
    outputs, measured = {}, {}
    for sampler, steps in runs:
        report(f"{bundle.name}: quality, {sampler} {steps} steps at {grid}^3")
        output = files["source"].with_name(f"{bundle.name}-{grid}-{sampler}-{steps}.mha")
        measured[sampler, steps] = _measure(_spec(bundle, files, device, steps, output, sampler=sampler))
        outputs[sampler, steps] = sitk.GetArrayFromImage(sitk.ReadImage(str(output))).astype(np.float64)
    top_vs_ref = compute_metrics(outputs[top], reference, target_modality, mask)
    table = []
    for run in runs:
        vs_top = compute_metrics(outputs[run], outputs[top], target_modality, mask)
        vs_ref = compute_metrics(outputs[run], reference, target_modality, mask)
        m = measured[run]
        table.append(
            {
                "kind": "quality",
                "family": bundle.family,
                "model": bundle.name,
                "pair": f"{source_modality}->{target_modality}",
                "grid": grid,
                "sampler": run[0],
                "steps": run[1],
                "device": device,
                "seconds": round(m["seconds"], 3),
                "cpu_seconds": round(m["cpu_seconds"], 3),
                "load_average": round(m["load_average"], 2),
                "peak_memory_mb": round(m["peak_memory_mb"], 1),
                "memory_delta_mb": round(m["memory_delta_mb"], 1),
                "reference_sampler": top[0],
                "reference_steps": top[1],
                "psnr_vs_200": _finite(vs_top["PSNR"]),
                "ssim_vs_200": _finite(vs_top["SSIM"]),
                "psnr_vs_reference": _finite(vs_ref["PSNR"]),
                "ssim_vs_reference": _finite(vs_ref["SSIM"]),
                "mae_vs_reference": _finite(vs_ref["MAE"]),
                # Against the truth, relative to the reference run's own result: positive = this run is worse.
                "psnr_loss_db": round(float(top_vs_ref["PSNR"] - vs_ref["PSNR"]), 3),
                "ssim_loss": round(float(top_vs_ref["SSIM"] - vs_ref["SSIM"]), 4),
                "speedup_vs_200": round(measured[top]["seconds"] / m["seconds"], 2),
                "cpu_speedup_vs_200": round(measured[top]["cpu_seconds"] / max(m["cpu_seconds"], 1e-9), 2),
                "default": run == default,
            }
        )
    return table


def run_benchmark(
    *,
    grids: Sequence[int] | None = None,
    families: Sequence[str] | None = None,
    device: str = "cpu",
    quick: bool = False,
    progress: StageProgress | None = None,
    models: Sequence[str] | None = None,
    memory: bool = True,
    quality_grids: Sequence[int] | None = None,
    quality_runs: Sequence[tuple[str, int]] | None = None,
) -> list[dict[str, Any]]:
    """Time every selected model on phantoms of each grid; add ALDM's quality rows per sampler and steps.

    Args:
        grids: cube edges (voxels at the bundle's spacing) of the speed rows (default 64, 96, 128; quick: 16).
        families: restrict to these families (default: every installed one).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
        quick: a smoke run: a 16^3 grid, a 16x16x8 memory volume, 1 step for diffusion speed rows, quality
            with DDIM 1 and 2 steps and DPM-Solver++ 1 step (explicit arguments still win).
        progress: called with ``(fraction, words)`` before each measurement.
        models: bundle names or folders to benchmark instead of every installed bundle.
        memory: add the memory row (a 256x256x160 volume) per model.
        quality_grids: cube edges of the ``aldm`` quality rows (default :data:`QUALITY_GRIDS`; quick: 16).
        quality_runs: ``(sampler, steps)`` of the quality rows (default :data:`QUALITY_RUNS`); the DDIM run
            with the most steps is the reference.

    Returns:
        rows (JSON-serialisable dicts): ``kind`` (``"speed"``, ``"memory"`` or ``"quality"``), ``family``,
        ``model``, ``pair``, ``grid`` (an edge, or ``"256x256x160"`` for memory rows), ``steps``, ``sampler``,
        ``device``, ``seconds``, ``peak_memory_mb``, ``memory_delta_mb``, target fields (speed, memory) or
        ``psnr_vs_200``, ``ssim_vs_200``, ``psnr_vs_reference``, ``ssim_vs_reference``, ``psnr_loss_db``,
        ``speedup_vs_200`` and ``cpu_speedup_vs_200`` (quality).
    """
    device = _resolve_device(device)
    bundles = _selected_bundles(families, models)
    grids = tuple(grids) if grids is not None else ((QUICK_GRID,) if quick else (64, 96, 128))
    quality_grids = tuple(quality_grids) if quality_grids is not None else ((QUICK_GRID,) if quick else QUALITY_GRIDS)
    quality_runs = tuple(quality_runs) if quality_runs is not None else (QUICK_RUNS if quick else QUALITY_RUNS)
    stochastic = [b for b in bundles if b.family == "aldm"]
    brains = 0 if quick else sum(_is_brain(b) for b in bundles)
    total = (
        brains
        + len(bundles) * (len(grids) + int(memory))
        + len(stochastic) * len(quality_grids) * (len(quality_runs) + 1)
    )
    done = 0

    def report(words: str) -> None:
        if progress is not None:
            progress(done / max(total, 1), words)

    def quality_report(words: str) -> None:  # called once before each quality run
        nonlocal done
        report(words)
        done += 1

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="medtrans-benchmark-") as tmp:
        phantoms = _Phantoms(Path(tmp))
        for bundle in bundles:
            pair, spacing = _benchmark_pair(bundle), _spacing(bundle)
            steps = 1 if quick and bundle.family == "aldm" else None
            for grid in grids:
                report(f"{bundle.name}: {grid}^3 on {device}")
                row = _timed_row("speed", bundle, phantoms.get(int(grid), spacing, pair), int(grid), device, steps)
                rows.append(row | _target_fields(int(grid), device, row["seconds"]))
                done += 1
            if _is_brain(bundle) and not quick:
                label = "x".join(map(str, BRAIN_SHAPE))
                report(f"{bundle.name}: a {label} volume on {device}")
                files = phantoms.get(BRAIN_SHAPE, spacing, pair, skull_stripped=_wants_skull_stripped(bundle))
                row = _timed_row("speed", bundle, files, label, device, steps, warm=True)
                target = BRAIN_TARGET_SECONDS.get(device)
                met = None if target is None else row["seconds"] <= target
                missed = None if target is None else round(max(row["seconds"] - target, 0.0), 2)
                rows.append(row | {"target_seconds": target, "target_met": met, "target_missed_by_s": missed})
                done += 1
            if memory:
                shape = QUICK_MEMORY_SHAPE if quick else MEMORY_SHAPE
                label = "x".join(map(str, shape))
                report(f"{bundle.name}: memory of a {label} volume on {device}")
                row = _timed_row("memory", bundle, phantoms.get(shape, spacing, pair), label, device, steps)
                rows.append(row | _memory_target_fields(row["peak_memory_mb"]))
                done += 1
            if bundle.family == "aldm":
                for grid in quality_grids:
                    files = phantoms.get(int(grid), spacing, pair)
                    rows += _quality_rows(bundle, files, int(grid), device, quality_runs, quality_report)
    if memory and not quick:  # the memory guard's estimate against the measured peak (its own table)
        from .benchmark_memory import estimate_rows

        rows += estimate_rows(bundles, device=device, progress=report)
    if progress is not None:
        progress(1.0, "benchmark done")
    return rows
