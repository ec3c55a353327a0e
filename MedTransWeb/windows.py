"""Window/level presets for the slice views: which apply to a CT-like volume (HU), which to an MR, and their windows.

A CT preset is a fixed window in Hounsfield units; an MR preset is a pair of percentiles of the volume's foreground,
because MR intensities have no absolute scale. A preset changes only the views whose modality it applies to, so
"Bone (CT)" never turns an MR view black. Pure functions: no trame, no VTK.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ANY, CT, MR = "any", "CT", "MR"
AUTO = "auto"
# Percentiles kept per volume: what the MR presets and "full range" need.
PERCENTILES = (0.0, 1.0, 15.0, 99.0, 99.5, 100.0)
# MR foreground: voxels brighter than this share of the 99.5th percentile (background noise and air are darker).
FOREGROUND_SHARE = 0.1
# Voxels sampled for the percentiles (a strided look is enough for a display window, and fast on 240x240x155).
SAMPLE_VOXELS = 400_000


@dataclass(frozen=True)
class WindowPreset:
    """One choice of the window list.

    Attributes:
        title: what the list shows.
        applies_to: ``"any"``, ``"CT"`` (CT-like modalities: CT, CBCT, contrast phases) or ``"MR"``.
        hu: ``(window, level)`` in HU of a CT preset.
        percentiles: ``(low, high)`` percentiles of the foreground of an MR preset (or of all voxels, for ``any``).
    """

    title: str
    applies_to: str
    hu: tuple[float, float] | None = None
    percentiles: tuple[float, float] | None = None


PRESETS: dict[str, WindowPreset] = {
    AUTO: WindowPreset("Modality default", ANY),
    "full range": WindowPreset("Full range (darkest to brightest voxel)", ANY, percentiles=(0.0, 100.0)),
    "soft tissue": WindowPreset("Soft tissue (CT)", CT, hu=(400.0, 40.0)),
    "brain": WindowPreset("Brain (CT)", CT, hu=(80.0, 40.0)),
    "bone": WindowPreset("Bone (CT)", CT, hu=(1800.0, 400.0)),
    "lung": WindowPreset("Lung (CT)", CT, hu=(1500.0, -600.0)),
    "brain mr": WindowPreset("Brain (MR)", MR, percentiles=(15.0, 99.5)),
    "head mr": WindowPreset("Whole head (MR)", MR, percentiles=(1.0, 99.0)),
}


@dataclass(frozen=True)
class VolumeStats:
    """Intensity percentiles of a volume: ``all_voxels`` over every voxel, ``foreground`` over the voxels brighter than
    :data:`FOREGROUND_SHARE` of the 99.5th percentile (an MR's head, not its dark background), each
    ``{percentile: value}`` for :data:`PERCENTILES`."""

    all_voxels: dict[float, float]
    foreground: dict[float, float]

    @classmethod
    def of(cls, array: np.ndarray) -> VolumeStats:
        flat = np.asarray(array).ravel()
        step = max(1, flat.size // SAMPLE_VOXELS)
        sample = flat[::step].astype(np.float64)
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            sample = np.zeros(1)
        bright = float(np.percentile(sample, 99.5))
        foreground = sample[sample > FOREGROUND_SHARE * bright] if bright > 0 else sample
        if foreground.size == 0:
            foreground = sample
        return cls(_percentiles(sample), _percentiles(foreground))


def _percentiles(values: np.ndarray) -> dict[float, float]:
    return dict(zip(PERCENTILES, (float(v) for v in np.percentile(values, PERCENTILES)), strict=True))


def family(is_ct: bool) -> str:
    return CT if is_ct else MR


def applies(name: str, is_ct: bool) -> bool:
    """Whether preset ``name`` changes a view of a CT-like (``is_ct``) or MR volume."""
    return PRESETS[name].applies_to in (ANY, family(is_ct))


def preset_window(
    name: str, is_ct: bool, stats: VolumeStats, default: tuple[float, float]
) -> tuple[float, float] | None:
    """``(window, level)`` that preset ``name`` gives a volume, or ``None`` when it does not apply to it.

    Args:
        name: a key of :data:`PRESETS`.
        is_ct: the volume's modality is CT-like (HU).
        stats: the volume's percentiles.
        default: ``(window, level)`` of the modality default (``auto``).

    Raises:
        ValueError: an unknown preset.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown window preset {name!r}; choose one of {list(PRESETS)}")
    preset = PRESETS[name]
    if not applies(name, is_ct):
        return None
    if preset.hu is not None:
        return preset.hu
    if preset.percentiles is None:
        return default
    values = stats.all_voxels if preset.applies_to == ANY else stats.foreground
    low, high = (values[p] for p in preset.percentiles)
    return max(high - low, 1e-6), (low + high) / 2


def window_items(shown: set[bool] | None = None) -> list[dict]:
    """The window list for the volumes shown (``{is_ct, ...}``; ``None`` or empty: every preset).

    Presets that apply to none of the shown volumes are left out; a CT preset's title gives its window in HU.
    """
    families = {family(is_ct) for is_ct in shown} if shown else {CT, MR}
    items = []
    for name, preset in PRESETS.items():
        if preset.applies_to != ANY and preset.applies_to not in families:
            continue
        suffix = f" · W {preset.hu[0]:.0f} / L {preset.hu[1]:.0f}" if preset.hu else ""
        items.append({"title": preset.title + suffix, "value": name})
    return items
