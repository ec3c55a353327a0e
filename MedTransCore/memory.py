"""Memory guard: estimate a run's peak memory from the image header, before anything is allocated, and refuse a
run that would not fit instead of letting it crash the machine.

The estimate counts every full-volume buffer of the pipeline at the stage where most of them are alive at once:
reading (the file's pixel type, then float32), the body mask, normalisation and resampling, the model grid
(the network's input, the sliding-window blending buffers, each sample's output and one window's activations),
the way back onto the source grid and writing. Bytes per voxel are counted in :mod:`MedTransCore.translate`
and :mod:`MedTransCore.preprocess`; :mod:`MedTransCore.benchmark_memory` compares the estimate with the measured
peak resident memory of a fresh process.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import MemoryGuardError

ENV_LIMIT = "MEDTRANS_MEMORY_LIMIT_MB"
# Fraction of the currently available memory a run may plan to use when no explicit limit is set.
AVAILABLE_FRACTION = 0.8
MB = 2**20

# Bytes per source-grid voxel (float32 pipeline), counted in translate.py / preprocess.py and checked against the
# measured peak (MedTransCore.benchmark_memory):
#: the source image every stage holds (the caller's float32 image).
SOURCE_BYTES = 4
#: freed whole-volume buffers the C allocator keeps instead of returning them (measured 2-3).
SLACK_BYTES = 3
#: body mask: the uint8 threshold, the 4-byte component labels and their relabelled copy, fill temporaries.
MASK_BYTES = 11
#: reading: the NaN/Inf test's boolean temporaries.
READ_CHECK_BYTES = 2
#: the normalised float32 source (kept to the end for a voxel-wise base) and the body mask.
NORMALISED_BYTES = 4
MASK_KEPT_BYTES = 1
#: back onto the source grid with a voxel-wise base: the resampled correction, its numpy copy, the result.
POINTWISE_BACK_BYTES = 4 + 4 + 4
#: writing: the result and the writer's copy of it (a DICOM series goes through float64).
WRITE_BYTES = 4 + 8
#: what a run allocates whatever the volume's size (library buffers, the progress machinery), in MB.
FIXED_MB = 32.0
# Per model-grid voxel besides the compute dtype's: the float32 resampled image and its copy on the way back,
# the uint8 resampled mask and the boolean mask handed to the network.
MODEL_IMAGE_BYTES = 4
MODEL_MASK_BYTES = 1 + 1


def available_memory_mb() -> float:
    """MemAvailable from /proc/meminfo (Linux); elsewhere the physical memory as a fallback."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB
    except (ValueError, OSError, AttributeError):
        return 8192.0


def resident_mb() -> float:
    """The resident memory this process holds now (Linux ``/proc/self/statm``; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError, AttributeError):
        import resource  # not on Windows

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def memory_limit_mb() -> tuple[float, str]:
    """The limit in MB and where it comes from (for the error message)."""
    value = os.environ.get(ENV_LIMIT)
    if value:
        try:
            limit = float(value)
        except ValueError:
            limit = math.nan
        if not math.isfinite(limit) or limit <= 0:
            raise MemoryGuardError(f"${ENV_LIMIT}={value!r} is not a positive number of megabytes")
        return limit, f"${ENV_LIMIT}"
    return AVAILABLE_FRACTION * available_memory_mb(), f"{int(AVAILABLE_FRACTION * 100)} % of the available memory"


def check_memory(needed_mb: float, what: str) -> None:
    """Raise ``MemoryGuardError`` when a run needing ``needed_mb`` more megabytes would exceed the limit.

    ``$MEDTRANS_MEMORY_LIMIT_MB`` bounds the whole process: what it holds already plus what the run adds. The
    default bounds what the run adds by a fraction of the memory available now (which excludes what is held).

    Args:
        needed_mb: the run's estimated peak on top of what the process holds now (e.g. ``estimate.needed_mb``).
        what: the run, for the message (``"translating a 512x512x400 volume with 'm'"``).
    """
    limit, source = memory_limit_mb()
    held = resident_mb() if os.environ.get(ENV_LIMIT) else 0.0
    total = needed_mb + held
    if total > limit:
        of_which = f" ({held:,.0f} MB of it held by this process already)" if held else ""
        raise MemoryGuardError(
            f"{what} needs about {total:,.0f} MB{of_which} but the memory limit is {limit:,.0f} MB ({source}); "
            f"crop the volume, use a coarser model spacing, or raise {ENV_LIMIT}"
        )


def read_bytes_per_voxel(pixel_bytes: int, is_float32: bool) -> float:
    """Peak bytes per voxel of reading an image: the file's pixels, the float32 copy and the NaN/Inf check."""
    return pixel_bytes + (0 if is_float32 else SOURCE_BYTES) + READ_CHECK_BYTES


@dataclass(frozen=True)
class MemoryEstimate:
    """A run's estimated peak memory, from sizes alone.

    Attributes:
        stages: MB needed by each stage of the run (read, mask, prepare, model, back, write), on top of what
            the process held before it; stages run one after another, so the peak is the largest.
        weights_mb: the model's weights (the loaded file and the network's copy, held throughout).
        source_voxels: voxels of the source grid; model_voxels: of the model grid (padded up to the window).
        fixed_mb: what a run allocates whatever its size.
    """

    stages: dict[str, float]
    weights_mb: float
    source_voxels: int
    model_voxels: int
    fixed_mb: float = FIXED_MB

    @property
    def needed_mb(self) -> float:
        """The peak the run adds to the process: fixed costs, weights and its largest stage."""
        return self.fixed_mb + self.weights_mb + max(self.stages.values(), default=0.0)

    @property
    def peak_stage(self) -> str:
        return max(self.stages, key=self.stages.get) if self.stages else ""


def estimate_translation(
    *,
    source_voxels: int,
    model_voxels: int,
    window_voxels: int,
    compute_bytes: int,
    window_bytes_per_voxel: float,
    weights_bytes: int = 0,
    samples: int = 1,
    pointwise: bool = False,
    resampled: bool = True,
    read_bytes_per_voxel: float | None = None,
    write: bool = False,
) -> MemoryEstimate:
    """Estimate a translation's peak memory from its grid sizes (see the module docstring for what is counted).

    Args:
        source_voxels: voxels of the source image.
        model_voxels: voxels of the grid the network works on, padded up to the window where smaller.
        window_voxels: voxels of one sliding window (the whole model grid when the model has no window).
        compute_bytes: bytes per value of the tensors handed to the network (4 for float32, 8 for float64).
        window_bytes_per_voxel: the family's working memory per window voxel (``Translator.bytes_per_window_voxel``),
            its output included.
        weights_bytes: size of the model's weight files.
        samples: how many times the model runs (uncertainty); each keeps a model-grid output.
        pointwise: the family refines a voxel-wise base computed at the source's resolution (keeps the
            normalised source to the end).
        resampled: the model grid differs from the source grid (a float32 model image and mask are made).
        read_bytes_per_voxel: count reading the file too (:func:`read_bytes_per_voxel`); ``None`` for an
            image already in memory.
        write: count writing the result.

    Returns:
        the :class:`MemoryEstimate`.
    """
    n, m, d = source_voxels, model_voxels, compute_bytes
    held = (SOURCE_BYTES + SLACK_BYTES) * n  # the source, alive for the whole run, and what the allocator keeps
    kept = NORMALISED_BYTES * n if pointwise else 0
    network = window_voxels * window_bytes_per_voxel  # kept by the allocator after the windows, too
    model_image = (MODEL_IMAGE_BYTES + MODEL_MASK_BYTES) * m if resampled else MODEL_MASK_BYTES * m
    blend = 2 * d * m if window_voxels < m else 0  # MONAI's output and weight buffers
    outputs = (2 * samples + 2) * d * m if samples > 1 else d * m  # the samples, their stack, mean and std
    if pointwise:
        back = POINTWISE_BACK_BYTES * n
    else:
        back = 2 * MODEL_IMAGE_BYTES * m + (SOURCE_BYTES * n if resampled else 0)
    stages = {
        "mask": (SOURCE_BYTES + MASK_BYTES) * n,
        # normalised source, model image and mask, the network's input and a whole-volume statistics copy
        "prepare": held + (MASK_KEPT_BYTES + NORMALISED_BYTES) * n + model_image + 2 * d * m,
        "model": held + kept + d * m + (samples - 1) * d * m + blend + network,
        "back": held + kept + max(network, outputs) + back,
    }
    if read_bytes_per_voxel is not None:
        stages = {"read": read_bytes_per_voxel * n, **stages}
    if write:
        stages["write"] = held + WRITE_BYTES * n * (2 if samples > 1 else 1)
    return MemoryEstimate(
        stages={k: v / MB for k, v in stages.items()},
        weights_mb=2 * weights_bytes / MB,
        source_voxels=n,
        model_voxels=m,
    )
