"""The memory guard's estimate against the measured peak, one fresh process per row (part of ``medtrans benchmark``).

Each row writes a CT-like (or, for an MR source, MR-like) int16 volume of a given size, then a fresh interpreter
does what ``medtrans translate`` does: read the header, estimate the run's peak (:func:`MedTransCore.translate.
estimate_memory`, what the memory guard compares with the limit), read the voxels, translate, write the result.
It reports the estimate and its own peak resident memory, imports included: ``VmHWM`` of ``/proc/self/status``,
the high-water mark of the process's own memory since it started. (``getrusage``'s ``ru_maxrss`` is not: Linux
carries the parent's resident memory over into a child's ``ru_maxrss`` when it is spawned, so a child of a large
process, a test runner say, reports at least the parent's size.) ``ratio`` is measured / estimated: at most 1
means the guard did not underestimate.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .bundles import Bundle

#: Source volumes (x, y, z voxels) of the comparison, at :data:`SPACING` mm.
SHAPES = ((128, 128, 128), (256, 256, 160), (512, 512, 200))
QUICK_SHAPES = ((24, 20, 16),)
SPACING = (1.0, 1.0, 1.0)
#: Families compared (a window-less baseline and the sliding-window networks).
FAMILIES = ("histogram_matching", "unet")
PREFERRED_PAIRS = (("CBCT", "CT"), ("MR_T1", "CT"), ("MR_T1", "MR_T2"))
COLUMNS = ("model", "pair", "size", "model_grid", "estimate_mb", "measured_mb", "ratio", "peak_stage")


def _pair(bundle: Bundle) -> tuple[str, str]:
    return next((p for p in PREFERRED_PAIRS if bundle.supports(*p)), bundle.pairs[0])


def write_volume(path: Path, shape: Sequence[int], modality: str, spacing: Sequence[float] = SPACING) -> Path:
    """An int16 ellipsoid body with a bright core and noise (HU for CT-like modalities, else MR-like), as a file.

    Args:
        path: destination (``.mha``: uncompressed, so writing and reading stay quick).
        shape: ``(x, y, z)`` voxels.
        modality: registry key of the source; CT-like keys get air at -1000 HU.
    """
    from .modalities import get_modality

    z, y, x = np.ogrid[tuple(slice(-1.0, 1.0, n * 1j) for n in shape[::-1])]
    radius = (x / 0.9) ** 2 + (y / 0.8) ** 2 + (z / 0.95) ** 2
    background, tissue, core = (-1000, 40, 700) if get_modality(modality).is_ct else (0, 400, 300)
    array = np.where(radius < 1.0, tissue, background).astype(np.int16)
    array += np.where(radius < 0.15, core, 0).astype(np.int16)
    array += np.random.default_rng(0).normal(0, 10, array.shape).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    sitk.WriteImage(image, str(path))
    return path


def measure(bundle: Bundle, source: Path, output: Path, device: str = "cpu") -> dict[str, Any]:
    """Estimate and run one translation of ``source`` in a fresh interpreter (see :func:`_worker`)."""
    source_modality, target_modality = _pair(bundle)
    spec = {
        "source": str(source),
        "output": str(output),
        "model": str(bundle.path),
        "source_modality": source_modality,
        "target_modality": target_modality,
        "device": device,
    }
    command = [sys.executable, "-c", "from MedTransCore.benchmark_memory import _worker; _worker()"]
    done = subprocess.run(
        command, input=json.dumps(spec), capture_output=True, encoding="utf-8", errors="replace", env=os.environ.copy()
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"memory estimate run of {bundle.name} failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _worker() -> None:
    """Subprocess entry: a JSON spec on stdin; what ``medtrans translate`` does; one JSON line of results."""
    spec = json.loads(sys.stdin.read())
    from .io import read_header, read_image, write_image
    from .memory import resident_mb
    from .preprocess import resampled_size
    from .translate import estimate_memory, select_model, translate_image

    header = read_header(spec["source"])
    bundle = select_model(spec["source_modality"], spec["target_modality"], spec["model"])
    estimate = estimate_memory(
        header.size, header.spacing, bundle, read_bytes_per_voxel=header.read_bytes_per_voxel, write=True
    )
    held = resident_mb()
    image, _ = read_image(spec["source"], header=header)
    result = translate_image(
        image, spec["source_modality"], spec["target_modality"], model=spec["model"], device=spec["device"]
    )
    write_image(result.image, spec["output"], overwrite=True)
    peak = peak_resident_mb()
    model_grid = resampled_size(header.size, header.spacing, bundle.metadata.get("spacing"))
    out = {
        "held_mb": held,
        "estimate_mb": held + estimate.needed_mb,
        "measured_mb": peak,
        "peak_stage": estimate.peak_stage,
        "model_grid": "x".join(map(str, model_grid)),
    }
    print(json.dumps(out))


def peak_resident_mb() -> float:
    """This process's peak resident memory since it started (``VmHWM``; ``ru_maxrss`` where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kilobytes on Linux


def estimate_rows(
    bundles: Sequence[Bundle],
    *,
    device: str = "cpu",
    shapes: Sequence[Sequence[int]] = SHAPES,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows comparing the memory guard's estimate with the measured peak, per bundle and volume size.

    Args:
        bundles: models to run; only those of :data:`FAMILIES` are.
        device: ``"cpu"`` or ``"cuda"``.
        shapes: source sizes ``(x, y, z)`` (:data:`QUICK_SHAPES` for a smoke run).
        progress: called with words before each row.

    Returns:
        rows with ``kind="memory_estimate"`` and :data:`COLUMNS`.
    """
    rows = []
    with tempfile.TemporaryDirectory(prefix="medtrans-memory-") as tmp:
        for shape in shapes:
            label = "x".join(map(str, shape))
            sources: dict[str, Path] = {}
            for bundle in [b for b in bundles if b.family in FAMILIES]:
                pair = _pair(bundle)
                if pair[0] not in sources:
                    sources[pair[0]] = write_volume(Path(tmp) / f"{label}-{pair[0]}.mha", shape, pair[0])
                if progress is not None:
                    progress(f"{bundle.name}: memory estimate of a {label} volume")
                measured = measure(bundle, sources[pair[0]], Path(tmp) / "out.mha", device)
                rows.append(
                    {
                        "kind": "memory_estimate",
                        "family": bundle.family,
                        "model": bundle.name,
                        "pair": f"{pair[0]}->{pair[1]}",
                        "size": label,
                        "device": device,
                        "model_grid": measured["model_grid"],
                        "estimate_mb": round(measured["estimate_mb"], 1),
                        "measured_mb": round(measured["measured_mb"], 1),
                        "ratio": round(measured["measured_mb"] / measured["estimate_mb"], 3),
                        "peak_stage": measured["peak_stage"],
                    }
                )
    return rows


def estimate_table(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown lines of the ``memory_estimate`` rows (none when there are none)."""
    rows = [r for r in rows if r.get("kind") == "memory_estimate"]
    if not rows:
        return []
    lines = ["", "## Memory guard: estimate versus measured peak (fresh process per row, imports included)", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    lines += ["| " + " | ".join(str(r.get(c, "-")) for c in COLUMNS) + " |" for r in rows]
    worst = max(rows, key=lambda r: r["ratio"])
    lines.append(
        f"(ratio = measured / estimate; the largest is {worst['ratio']:.2f} ({worst['model']}, {worst['size']}): "
        + ("the guard never underestimated)" if worst["ratio"] <= 1.0 else "the guard UNDERESTIMATED that run)")
    )
    return lines
