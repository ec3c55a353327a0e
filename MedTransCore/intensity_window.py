"""Per-bundle intensity windows: the network sees a narrow HU window, the source supplies everything outside it.

The default normalisation maps CT's ``[-1024, 3000]`` HU onto ``[-1, 1]``, where a 100 HU enhancement is 0.05 units.
A bundle may instead declare, in its ``normalisation``::

    "intensity_window": {"CT": [-200, 200], "CT_ARTERIAL": [-200, 600]}

``[low, high]`` in HU per CT-like modality. For a modality with a window:

* the network's input is ``low -> -1``, ``high -> 1`` (linear), clipped to ``[-1, 1]``;
* the output is the exact inverse of that linear map (inside the window ``denormalise(normalise(x)) == x``),
  clipped to the target's window: values the model would put beyond it are cut at its edge, so choose the
  target's window wide enough for what the model makes (arterial vessels at 300-500 HU need more than W400/L0);
* every voxel whose *source* value lies outside the source's window gets that source value back unchanged
  (:func:`keep_outside_window`): bone, air and metal, on which contrast enhancement or CBCT -> CT correction do not
  act. The model's output there (made from a clipped input) is discarded. With several sources (``source_sets``),
  the first source's window and values decide.

Which pairs may have one (checked when a bundle loads, :func:`check_bundle_windows`, and for a training run's data,
``medtrans_training.data``):

* only CT-like modalities: MR has no absolute unit, its normalisation is ``normalisation.mr_scheme``;
* in each pair and source set either every modality has a window or none has. A window therefore never meets a
  cross-kind pair (MR -> CT, CT -> MR): there, what the clip removes has no HU source to come back from, so a
  synthetic CT's bone and metal would be capped at the window's top (a wrong dose) and a CT source's bone and air
  would reach the network as one flat value. Such a bundle is refused instead of running with that loss; it keeps
  the default normalisation.

A bundle without the field runs exactly as before: none of this is called.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from .errors import BundleError
from .modalities import MODALITIES

#: The key in a bundle's ``normalisation`` (and ``data.intensity_window`` of a training run).
FIELD = "intensity_window"
Window = tuple[float, float]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def parse_windows(value: Any, where: str, error: type[Exception] = BundleError) -> dict[str, Window]:
    """Check an ``intensity_window`` mapping and return it as ``{modality: (low, high)}`` floats.

    Args:
        value: the declared mapping, ``{"CT": [-200, 200], ...}``.
        where: the words that start each message (the bundle's metadata file, or ``data.intensity_window``).
        error: the exception raised (``BundleError`` for a bundle, ``InputError`` for a run config).

    Raises:
        error: not a non-empty mapping, an unknown or MR modality, or a window that is not two finite numbers
            ``low < high``.
    """
    ct_like = ", ".join(key for key, m in MODALITIES.items() if m.is_ct)
    if not isinstance(value, Mapping) or not value:
        raise error(f'{where} must map CT-like modalities to [low, high] in HU, e.g. {{"CT": [-200, 200]}}')
    windows = {}
    for key, window in value.items():
        if key not in MODALITIES:
            raise error(f"{where}: unknown modality {key!r}; a window is for one of {ct_like}")
        if not MODALITIES[key].is_ct:
            raise error(
                f"{where}: {key} is an MR modality, which has no absolute unit to window (its normalisation is "
                f"normalisation.mr_scheme); only CT-like modalities take an intensity window: {ct_like}"
            )
        if not (isinstance(window, (list, tuple)) and len(window) == 2 and all(_is_number(v) for v in window)):
            raise error(f"{where}: the window of {key} must be [low, high] in HU, two numbers, got {window!r}")
        low, high = float(window[0]), float(window[1])
        if not low < high:
            raise error(f"{where}: the window of {key} must have low < high, got [{window[0]}, {window[1]}]")
        windows[key] = (low, high)
    return windows


def check_window_pairs(
    windows: Mapping[str, Window],
    pairs: Iterable[tuple[Sequence[str], str]],
    where: str,
    error: type[Exception] = BundleError,
) -> None:
    """Refuse a pair or source set where some modalities have a window and others do not (module docstring).

    Args:
        windows: the parsed windows.
        pairs: ``(sources, target)`` of every pair and source set.
        where: the words that start the message.
        error: the exception raised.
    """
    for sources, target in pairs:
        keys = [*sources, target]
        missing = [key for key in keys if key not in windows]
        if not missing or len(missing) == len(keys):
            continue
        name = f"{' + '.join(sources)} -> {target}"
        mr = [key for key in missing if not MODALITIES[key].is_ct]
        if mr:
            raise error(
                f"{where}: {name} pairs MR with a windowed CT-like modality; values outside a window come back only "
                "from a CT-like source into a CT-like target (a synthetic CT's bone would be capped at the window's "
                "top, a CT source's bone and air would reach the network as one value): no intensity window where "
                "MR is paired with a CT-like modality"
            )
        raise error(
            f"{where}: {name} has a window for {', '.join(k for k in keys if k in windows)} but not for "
            f"{', '.join(missing)}; give every modality of a pair a window, or none"
        )


def check_bundle_windows(meta: Mapping[str, Any], where: str) -> None:
    """Validate ``normalisation.intensity_window`` of a bundle's metadata (called by ``validate_metadata`` after
    the pairs and source sets are checked).

    Raises:
        BundleError: a bad window (:func:`parse_windows`), a window for a modality the bundle does not list, a pair
            or source set mixing windowed and unwindowed modalities (:func:`check_window_pairs`), or a window with
            ``input_standardisation`` (its reference quantiles are in the default normalisation).
    """
    field = f"{where}: field 'normalisation.{FIELD}'"
    windows = parse_windows(meta["normalisation"][FIELD], field)
    unlisted = [key for key in windows if key not in meta["modalities"]]
    if unlisted:
        raise BundleError(f"{field}: {', '.join(unlisted)} is not among the bundle's modalities")
    sets = [([s], t) for s, t in meta["pairs"]]
    sets += [(entry["sources"], entry["target"]) for entry in meta.get("source_sets") or []]
    check_window_pairs(windows, sets, field)
    if meta.get("input_standardisation"):
        raise BundleError(
            f"{field}: a window cannot be combined with input_standardisation (its reference quantiles were "
            "measured in the default normalisation)"
        )


def bundle_windows(metadata: Mapping[str, Any]) -> dict[str, Window]:
    """The intensity windows of a bundle's metadata (validated when it loaded): ``{modality: (low, high)}``,
    empty when it declares none."""
    declared = (metadata.get("normalisation") or {}).get(FIELD) or {}
    return {key: (float(low), float(high)) for key, (low, high) in declared.items()}


def keep_outside_window(
    result: sitk.Image,
    source: sitk.Image,
    source_window: Window | None,
    target_window: Window | None,
    std: sitk.Image | None = None,
) -> tuple[sitk.Image, sitk.Image | None]:
    """The result clipped to the target's window, with the source's own value wherever the source lies outside
    its window (and no uncertainty there).

    Args:
        result: the de-normalised result (float32, target unit) on the source grid.
        source: the source (float32, HU) on exactly that grid.
        source_window: the source's ``(low, high)``; ``None``: nothing to do, the inputs are returned.
        target_window: the target's ``(low, high)``; ``None``: the result is not clipped.
        std: the voxel-wise standard deviation on that grid, if any.

    Returns:
        ``(result, std)``: new float32 images on the result's geometry.
    """
    if source_window is None:
        return result, std
    values = sitk.GetArrayFromImage(result)
    if target_window is not None:
        np.clip(values, *target_window, out=values)
    src = sitk.GetArrayViewFromImage(source)
    outside = (src < source_window[0]) | (src > source_window[1])
    np.copyto(values, src, where=outside, casting="same_kind")
    out = _image_like(values, result)
    del values
    if std is not None:
        spread = sitk.GetArrayFromImage(std)
        spread[outside] = 0.0
        std = _image_like(spread, std)
    return out, std


def _image_like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32, copy=False))
    image.CopyInformation(reference)
    return image
