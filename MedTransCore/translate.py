"""Translation orchestration, shared by the CLI, the Slicer logic and the browser front end.

image (any grid) -> body mask -> normalise -> resample to the model's spacing -> sliding windows over the
model's grid -> back onto the source grid -> de-normalise. A model that refines a voxel-wise base
(``Translator.pointwise_base``) gets that base at the source's resolution plus its resampled correction.
Device choice, progress, cancellation, the memory guard, plausibility warnings and seeds live here so every
front end behaves the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .bundles import Bundle, select_bundle
from .errors import InputError
from .memory import check_memory
from .modalities import default_params, denormalise, normalisation_params, normalise
from .models.base import Translator, check_cancel
from .models.registry import get_translator_class
from .plausibility import check_plausibility
from .preprocess import body_mask, resample_like, resample_to_spacing, run_sliding_windows

StageProgress = Callable[[float, str], None]
# Re-exported: front ends import the whole translation API from here.
select_model = select_bundle
# The normalised value of "nothing": air for CT-like, 0 for MR.
BACKGROUND = -1.0


@dataclass
class TranslationResult:
    """What a translation produced.

    Attributes:
        image: the synthetic volume, float32, on exactly the source geometry, in the target's unit.
        uncertainty: voxel-wise standard deviation over samples (target unit) or ``None``.
        bundle: the model that ran.
        settings: model, version, family, steps, seed, device, modalities (recorded with the output).
        warnings: plausibility warnings.
    """

    image: sitk.Image
    uncertainty: sitk.Image | None
    bundle: Bundle
    settings: dict
    warnings: list[str] = field(default_factory=list)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else the CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise InputError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return torch.device(device)


def load_translator(bundle: Bundle, device: torch.device) -> Translator:
    return get_translator_class(bundle.family)(bundle, device)


def _estimate_memory_mb(translator: Translator, grid_voxels: int, window_voxels: int, samples: int) -> float:
    # Whole-volume copies (source, mask, blended output, weights, samples) in float32/64 plus one window's network.
    volume = grid_voxels * (8 * 6 + 4 * max(samples, 1))
    return (volume + window_voxels * translator.bytes_per_window_voxel()) / 2**20 + 300.0


def translate_image(
    image: sitk.Image,
    source_modality: str,
    target_modality: str,
    *,
    model: str | Path | None = None,
    steps: int | None = None,
    seed: int = 0,
    device: str = "auto",
    uncertainty_samples: int = 0,
    progress: StageProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    strict: bool = False,
    dicom_modality: str | None = None,
) -> TranslationResult:
    """Translate a 3D image to another modality on exactly its own geometry.

    Args:
        image: 3D source image (any pixel type; read through ``MedTransCore.io.read_image`` for validation).
        source_modality: registry key of the source, e.g. ``"CBCT"``.
        target_modality: registry key of the target, e.g. ``"CT"``.
        model: bundle name or folder; ``None`` picks the best installed bundle for the pair.
        steps: sampler steps for diffusion families (``None``: the bundle's default).
        seed: random seed; the same seed gives the same result.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        uncertainty_samples: ``N >= 2`` runs a stochastic model N times (seeds ``seed .. seed+N-1``) and returns
            the mean and the voxel-wise standard deviation.
        progress: called with ``(fraction in [0, 1], stage words)``.
        cancel: polled between windows and sampler steps; returning True raises ``CancelledError``.
        strict: turn plausibility warnings into an ``InputError``.
        dicom_modality: DICOM Modality tag of the source, if known (plausibility check).
    """
    report = progress or (lambda fraction, stage: None)
    if uncertainty_samples == 1 or uncertainty_samples < 0:
        raise InputError("uncertainty needs at least 2 samples")
    bundle = select_model(source_modality, target_modality, model)
    torch_device = resolve_device(device)
    report(0.0, f"loading model {bundle.name}")
    translator = load_translator(bundle, torch_device)
    if uncertainty_samples and not translator.stochastic:
        raise InputError(f"model {bundle.name!r} ({bundle.family}) is deterministic: it has no uncertainty to sample")
    steps = steps if steps is not None else translator.default_steps

    array = sitk.GetArrayFromImage(image).astype(np.float64)
    warnings = check_plausibility(
        array,
        source_modality,
        size=image.GetSize(),
        spacing=image.GetSpacing(),
        bundle=bundle,
        dicom_modality=dicom_modality,
        strict=strict,
    )
    check_cancel(cancel)
    report(0.02, "preparing")
    mask_image = body_mask(image, source_modality)
    mask = sitk.GetArrayFromImage(mask_image).astype(bool)
    source_params = normalisation_params(array, source_modality, mask)
    normalised = sitk.GetImageFromArray(normalise(array, source_params))
    normalised.CopyInformation(image)

    spacing = bundle.metadata.get("spacing")
    model_image = resample_to_spacing(normalised, spacing, default_value=BACKGROUND)
    model_mask = resample_to_spacing(mask_image, spacing, interpolator=sitk.sitkNearestNeighbor, default_value=0)
    grid = bundle.metadata.get("grid")
    volume_shape = model_image.GetSize()[::-1]
    window = tuple(grid[::-1]) if grid else tuple(volume_shape)
    samples = max(uncertainty_samples, 1)
    check_memory(
        _estimate_memory_mb(translator, int(np.prod(volume_shape)), int(np.prod(window)), samples),
        f"translating a {'x'.join(map(str, image.GetSize()))} volume with {bundle.name!r}",
    )

    volume = torch.from_numpy(sitk.GetArrayFromImage(model_image)).to(translator.dtype)[None, None]
    volume_mask = torch.from_numpy(sitk.GetArrayFromImage(model_mask).astype(bool))[None, None]
    translator.prepare(volume, volume_mask, source_modality, target_modality)
    outputs = []
    for index in range(samples):
        sample_seed = seed + index
        span = (0.05 + 0.9 * index / samples, 0.9 / samples)
        label = f"translating ({bundle.family}" + (f", sample {index + 1}/{samples})" if samples > 1 else ")")

        def window_fn(x: torch.Tensor, _seed: int = sample_seed) -> torch.Tensor:
            torch.manual_seed(_seed)
            return translator.translate(
                x.to(torch_device), source_modality, target_modality, steps=steps, seed=_seed, cancel=cancel
            ).to(x.device, x.dtype)

        with torch.inference_mode():
            out = run_sliding_windows(
                volume,
                window,
                window_fn,
                progress=lambda f, span=span, label=label: report(span[0] + span[1] * f, label),
                cancel=cancel,
            )
        outputs.append(out[0, 0].double().numpy())
    check_cancel(cancel)
    report(0.96, "writing the result on the source grid")

    target_params = source_params if target_modality == source_modality else default_params(target_modality)
    stack = np.stack(outputs)
    mean = stack.mean(axis=0)
    base_on_model = translator.pointwise_base(sitk.GetArrayFromImage(model_image), target_modality)
    if base_on_model is None:
        result = _on_source_grid(denormalise(mean, target_params), model_image, image)
    else:
        # Keep the source's resolution: the base at full resolution plus the model's (smooth) correction.
        correction = _on_source_grid(mean - base_on_model, model_image, image, default_value=0.0)
        base = translator.pointwise_base(sitk.GetArrayFromImage(normalised), target_modality)
        refined = sitk.GetImageFromArray(denormalise(base + sitk.GetArrayFromImage(correction), target_params))
        refined.CopyInformation(image)
        result = sitk.Cast(refined, sitk.sitkFloat32)
    std_image = None
    if uncertainty_samples:
        std = stack.std(axis=0) * (target_params["high"] - target_params["low"]) / 2.0
        std_image = _on_source_grid(std, model_image, image, default_value=0.0)
    settings = {
        "model": bundle.name,
        "version": bundle.metadata["version"],
        "family": bundle.family,
        "steps": steps,
        "seed": seed,
        "device": torch_device.type,
        "source_modality": source_modality,
        "target_modality": target_modality,
        "uncertainty_samples": uncertainty_samples,
    }
    report(1.0, "done")
    return TranslationResult(result, std_image, bundle, settings, warnings)


def _on_source_grid(
    array: np.ndarray, model_image: sitk.Image, source: sitk.Image, default_value: float | None = None
) -> sitk.Image:
    """Put a (Z, Y, X) array on the model grid back onto the source geometry as float32."""
    on_model = sitk.GetImageFromArray(array)
    on_model.CopyInformation(model_image)
    if default_value is None:
        default_value = float(np.min(array))
    back = resample_like(on_model, source, default_value=default_value)
    return sitk.Cast(back, sitk.sitkFloat32)
