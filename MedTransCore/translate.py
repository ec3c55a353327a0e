"""Translation orchestration, shared by the CLI, the Slicer logic and the browser front end.

image (any grid) -> body mask -> normalise -> resample to the model's spacing -> sliding windows over the
model's grid -> back onto the source grid -> de-normalise. A model that refines a voxel-wise base
(``Translator.pointwise_base``) gets that base at the source's resolution plus its resampled correction.
Device choice, progress, cancellation, the memory guard, plausibility warnings and seeds live here so every
front end behaves the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .bundles import Bundle, select_bundle
from .errors import InputError
from .io.reading import ImageHeader
from .memory import MemoryEstimate, check_memory, estimate_translation
from .modalities import default_params, denormalise, normalisation_params, normalise
from .models.base import Translator, check_cancel
from .models.registry import get_translator_class
from .plausibility import check_plausibility
from .preprocess import (
    affine_image,
    body_mask,
    resample_like,
    resample_to_spacing,
    resampled_size,
    run_sliding_windows,
)

StageProgress = Callable[[float, str], None]
# Re-exported: front ends import the whole translation API from here.
select_model = select_bundle
# The normalised value of "nothing": air for CT-like, 0 for MR.
BACKGROUND = -1.0
# Voxels per slab when a voxel-wise base is computed at the source's resolution (its float64 temporaries).
SLAB_VOXELS = 2**22


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


def _weights_bytes(bundle: Bundle) -> int:
    return sum(f.stat().st_size for f in bundle.path.glob("*.safetensors")) if bundle.path else 0


def estimate_memory(
    size: Sequence[int],
    spacing: Sequence[float],
    bundle: Bundle,
    *,
    samples: int = 1,
    read_bytes_per_voxel: float | None = None,
    write: bool = False,
) -> MemoryEstimate:
    """The peak memory of translating a volume of ``size`` voxels at ``spacing`` with ``bundle``, from sizes alone.

    Args:
        size: ``(x, y, z)`` voxels of the source; spacing: ``(x, y, z)`` mm.
        bundle: the model (its spacing and grid size the model grid; its family the network's memory).
        samples: runs of the model (uncertainty).
        read_bytes_per_voxel: also count reading the file (``ImageHeader.read_bytes_per_voxel``).
        write: also count writing the result.
    """
    family = get_translator_class(bundle.family)
    model_spacing = bundle.metadata.get("spacing")
    resampled = model_spacing is not None and not np.allclose(model_spacing, spacing, rtol=0, atol=1e-9)
    model_size = resampled_size(size, spacing, model_spacing if resampled else None)
    grid = bundle.metadata.get("grid")
    window = tuple(grid) if grid else model_size
    return estimate_translation(
        source_voxels=math.prod(size),
        model_voxels=math.prod(max(n, w) for n, w in zip(model_size, window)),
        window_voxels=math.prod(window),
        compute_bytes=family.dtype.itemsize,
        window_bytes_per_voxel=family.window_bytes_per_voxel(bundle),
        weights_bytes=_weights_bytes(bundle),
        samples=samples,
        pointwise=family.refines_pointwise_base(),
        resampled=resampled,
        read_bytes_per_voxel=read_bytes_per_voxel,
        write=write,
    )


def check_translation_memory(
    size: Sequence[int],
    spacing: Sequence[float],
    bundle: Bundle,
    *,
    samples: int = 1,
    read_bytes_per_voxel: float | None = None,
    write: bool = False,
) -> MemoryEstimate:
    """The memory guard of a translation (arguments as :func:`estimate_memory`), before anything is allocated.

    Raises:
        MemoryGuardError: the estimated peak exceeds the limit (``$MEDTRANS_MEMORY_LIMIT_MB`` or a share of the
            available memory); the message names the sizes, the limit and how to change it.
    """
    estimate = estimate_memory(
        size, spacing, bundle, samples=samples, read_bytes_per_voxel=read_bytes_per_voxel, write=write
    )
    shape = "x".join(map(str, size))
    model_shape = "x".join(map(str, resampled_size(size, spacing, bundle.metadata.get("spacing"))))
    on_grid = f" ({model_shape} on its grid)" if model_shape != shape else ""
    check_memory(estimate.needed_mb, f"translating a {shape} volume with {bundle.name!r}{on_grid}")
    return estimate


def check_file_memory(
    header: ImageHeader,
    source_modality: str,
    target_modality: str,
    *,
    model: str | Path | None = None,
    samples: int = 0,
) -> MemoryEstimate:
    """The memory guard of reading, translating and writing a file, from its header before a voxel is read.

    Args:
        header: :func:`MedTransCore.io.read_header` of the input.
        source_modality, target_modality, model: as for :func:`translate_image` (they pick the bundle).
        samples: uncertainty samples (0: none).
    """
    bundle = select_model(source_modality, target_modality, model)
    return check_translation_memory(
        header.size,
        header.spacing,
        bundle,
        samples=max(samples, 1),
        read_bytes_per_voxel=header.read_bytes_per_voxel,
        write=True,
    )


def translate_image(
    image: sitk.Image,
    source_modality: str,
    target_modality: str,
    *,
    model: str | Path | None = None,
    steps: int | None = None,
    sampler: str | None = None,
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
        sampler: sampler of diffusion families, ``"ddim"`` or ``"dpmpp"`` (``None``: the bundle's default).
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
    samples = max(uncertainty_samples, 1)
    # Before the first copy of the image: the caller holds it already, everything else is still to come.
    check_translation_memory(image.GetSize(), image.GetSpacing(), bundle, samples=samples)
    report(0.0, f"loading model {bundle.name}")
    translator = load_translator(bundle, torch_device)
    if uncertainty_samples and not translator.stochastic:
        raise InputError(f"model {bundle.name!r} ({bundle.family}) is deterministic: it has no uncertainty to sample")
    steps = steps if steps is not None else translator.default_steps
    if sampler is not None:
        translator.use_sampler(sampler)

    # float32 throughout the source grid; whole-volume numpy copies are views or freed as soon as possible.
    source = image if image.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayViewFromImage(source)
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
    mask_image = body_mask(source, source_modality)
    source_params = normalisation_params(array, source_modality, sitk.GetArrayViewFromImage(mask_image).view(bool))
    del array
    normalised = affine_image(source, lambda a: normalise(a, source_params))

    spacing = bundle.metadata.get("spacing")
    model_image = resample_to_spacing(normalised, spacing)
    model_mask = resample_to_spacing(mask_image, spacing, interpolator=sitk.sitkNearestNeighbor)
    del mask_image
    model_grid = _Grid.of(model_image)
    grid = bundle.metadata.get("grid")
    window = tuple(grid[::-1]) if grid else model_grid.shape

    volume = torch.from_numpy(sitk.GetArrayFromImage(model_image)).to(translator.dtype)[None, None]
    volume_mask = torch.from_numpy(sitk.GetArrayViewFromImage(model_mask).astype(bool))[None, None]
    del model_image, model_mask
    translator.prepare(volume, volume_mask, source_modality, target_modality)
    del volume_mask
    pointwise = translator.pointwise_base(np.zeros(1), target_modality) is not None
    if not pointwise:
        del normalised  # only a voxel-wise base needs the source's own resolution again
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
        outputs.append(out[0, 0].numpy())
        del out
    check_cancel(cancel)
    report(0.96, "writing the result on the source grid")

    target_params = source_params if target_modality == source_modality else default_params(target_modality)
    mean = outputs[0] if samples == 1 else np.mean(outputs, axis=0)
    std = np.std(outputs, axis=0) if uncertainty_samples else None
    del outputs
    if not pointwise:
        del volume
        on_model = affine_image(model_grid.image(mean), lambda a: denormalise(a, target_params))
        del mean
        result = _on_source_grid(on_model, image)
    else:
        # Keep the source's resolution: the base at full resolution plus the model's (smooth) correction.
        correction = mean - translator.pointwise_base(volume[0, 0].numpy(), target_modality)
        del volume, mean
        correction = sitk.GetArrayFromImage(_on_source_grid(model_grid.image(correction), image))
        result = _refine_pointwise(translator, normalised, correction, target_modality, target_params)
        del normalised, correction
    std_image = None
    if std is not None:
        std = std * (target_params["high"] - target_params["low"]) / 2.0
        std_image = _on_source_grid(model_grid.image(std), image)
    settings = {
        "model": bundle.name,
        "version": bundle.metadata["version"],
        "family": bundle.family,
        "steps": steps,
        "sampler": translator.sampler,
        "seed": seed,
        "device": torch_device.type,
        "source_modality": source_modality,
        "target_modality": target_modality,
        "uncertainty_samples": uncertainty_samples,
    }
    report(1.0, "done")
    return TranslationResult(result, std_image, bundle, settings, warnings)


@dataclass(frozen=True)
class _Grid:
    """The geometry of the model grid, kept once its (whole-volume) image is freed."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> _Grid:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    @property
    def shape(self) -> tuple[int, ...]:
        """``(Z, Y, X)``."""
        return self.size[::-1]

    def image(self, array: np.ndarray) -> sitk.Image:
        """A ``(Z, Y, X)`` array on this grid as a float32 image."""
        image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def _on_source_grid(on_model: sitk.Image, source: sitk.Image) -> sitk.Image:
    """Put a float32 image on the model grid back onto the source geometry.

    The model grid's last voxel centre can stop short of the source's (a size that is no multiple of the model
    spacing): one replicated voxel around the model grid (clamped extrapolation) keeps those source voxels
    interpolated from the border instead of a constant, which was a fake slab of background.
    """
    if on_model.GetSize() == source.GetSize() and _same_geometry(on_model, source):
        on_model.CopyInformation(source)  # no resampling (and no copy) when the model works on the source grid
        return on_model
    padded = sitk.ZeroFluxNeumannPad(on_model, (1,) * 3, (1,) * 3)
    return resample_like(padded, source, default_value=0.0, extrapolate=True)


def _same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    pairs = ((a.GetSpacing(), b.GetSpacing()), (a.GetOrigin(), b.GetOrigin()), (a.GetDirection(), b.GetDirection()))
    return all(np.allclose(x, y, rtol=0, atol=1e-9) for x, y in pairs)


def _refine_pointwise(
    translator: Translator,
    normalised: sitk.Image,
    correction: np.ndarray,
    target_modality: str,
    target_params: dict[str, float],
) -> sitk.Image:
    """De-normalised voxel-wise base of the normalised source plus the correction on the source grid (float32).

    Computed slab by slab along z, in place in ``correction``: the base works in float64, and whole-volume
    float64 copies are what made large volumes run out of memory.
    """
    source = sitk.GetArrayViewFromImage(normalised)
    step = max(1, SLAB_VOXELS // max(1, source[0].size))
    for z in range(0, source.shape[0], step):
        slab = slice(z, z + step)
        correction[slab] = denormalise(
            translator.pointwise_base(source[slab], target_modality) + correction[slab], target_params
        )
    out = sitk.GetImageFromArray(correction)
    out.CopyInformation(normalised)
    return out
