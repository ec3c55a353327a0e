"""Translation orchestration, shared by the CLI, the Slicer logic and the browser front end.

image (any grid) -> body mask -> normalise -> resample to the model's spacing -> sliding windows over the
model's grid -> back onto the source grid -> de-normalise. A model that refines a voxel-wise base
(``Translator.pointwise_base``) gets that base at the source's resolution plus its resampled correction.
Several co-registered sources (three acquired MR sequences, one missing) are resampled onto the first source's grid,
each normalised with its own body mask, and handed to the model as channels, first source first. A bundle may ask
for the sources in one orientation (``metadata["orientation"]``, e.g. ``"LPS"``) and for its output to be exactly 0
outside the first source's non-zero region (``metadata["output_mask"] == "source_nonzero"``, skull-stripped MR).
A bundle's intensity windows (``normalisation.intensity_window``) clip the model's input, and its result keeps the
source's values outside the source's window (:mod:`MedTransCore.intensity_window`).
Device choice, progress, cancellation, the memory guard, plausibility warnings and seeds live here so every
front end behaves the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .bundles import Bundle, choose_bundle, select_bundle
from .domain import classify_domain, domain_hints
from .errors import BundleError, InputError
from .intensity_window import bundle_windows, keep_outside_window
from .io.reading import ImageHeader
from .memory import MASK_BYTES, MB, NORMALISED_BYTES, SOURCE_BYTES, MemoryEstimate, check_memory, estimate_translation
from .modalities import (
    MR_SCHEMES,
    default_params,
    denormalise,
    get_modality,
    normalisation_params,
    normalise,
)
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
# ``metadata["output_mask"]`` value: the output is 0 outside the first source's non-zero region (holes filled).
SOURCE_NONZERO = "source_nonzero"
# The axis letters of an orientation code (``metadata["orientation"]``), one of each pair.
_ORIENTATION_AXES = ("LR", "PA", "IS")


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


def select_sources_model(
    source_modalities: Sequence[str], target_modality: str, model: str | Path | None = None
) -> Bundle:
    """The bundle for a set of sources: the named one, or the best installed one (cheap, no torch).

    Which sets a bundle accepts is checked by :func:`check_model_sources` (the translator's ``check_sources``).
    """
    # bundles.select_bundle (= choose_bundle without its warnings) takes a source set: a named model must list the
    # set (``pairs`` for one source, ``source_sets`` for several); the default is the best installed one that does.
    return select_model(list(source_modalities), target_modality, model)


def check_model_sources(bundle: Bundle, source_modalities: Sequence[str], target_modality: str) -> None:
    """Refuse (``InputError``) a set of sources the bundle's family or metadata does not accept, before any weight
    is loaded (``Translator.check_sources`` on a translator that holds only the bundle)."""
    cls = get_translator_class(bundle.family)
    probe = cls.__new__(cls)
    Translator.__init__(probe, bundle)
    probe.check_sources(list(source_modalities), target_modality)


def check_source_modalities(source_modality: str, extra_modalities: Sequence[str], target_modality: str) -> list[str]:
    """The source modalities, first first, once each is known and distinct and none is the target.

    Raises:
        InputError: an unknown modality, one given twice, or the target among the sources (a "synthetic CT" made
            from a CT is the input relabelled, never a translation).
    """
    modalities = [source_modality, *extra_modalities]
    for key in [*modalities, target_modality]:
        get_modality(key)
    seen = set()
    for key in modalities:
        if key in seen:
            raise InputError(f"the source modality {key} is given twice; give each sequence once")
        seen.add(key)
    if not extra_modalities and source_modality == target_modality:
        raise InputError(f"the source is already {target_modality}: choose another target modality")
    if target_modality in seen:
        raise InputError(
            f"the target {target_modality} is among the sources ({', '.join(modalities)}); "
            "translate into a modality that is missing"
        )
    return modalities


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
    extra_sources: Sequence[tuple[int, float | None]] = (),
) -> MemoryEstimate:
    """The peak memory of translating a volume of ``size`` voxels at ``spacing`` with ``bundle``, from sizes alone.

    Args:
        size: ``(x, y, z)`` voxels of the source; spacing: ``(x, y, z)`` mm.
        bundle: the model (its spacing and grid size the model grid; its family the network's memory).
        samples: runs of the model (uncertainty).
        read_bytes_per_voxel: also count reading the file (``ImageHeader.read_bytes_per_voxel``).
        write: also count writing the result.
        extra_sources: ``(voxels, read bytes per voxel or None)`` of each further source, on its own grid: each is
            held as read, costs its own mask and normalisation on the first source's grid while it is prepared
            and adds a channel (and its copy in the stacked input) on the model grid.
    """
    family = get_translator_class(bundle.family)
    model_spacing = bundle.metadata.get("spacing")
    resampled = model_spacing is not None and not np.allclose(model_spacing, spacing, rtol=0, atol=1e-9)
    model_size = resampled_size(size, spacing, model_spacing if resampled else None)
    grid = bundle.metadata.get("grid")
    window = tuple(grid) if grid else model_size
    estimate = estimate_translation(
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
    n, m, d = estimate.source_voxels, estimate.model_voxels, family.dtype.itemsize
    # The reoriented copy of the first source (a permutation of axes is a full copy).
    extra = SOURCE_BYTES * n if bundle.metadata.get("orientation") else 0
    # Each further source: held as read; its channel on the model grid and that channel's copy in the stack.
    extra += sum(SOURCE_BYTES * v + 2 * d * m for v, _ in extra_sources)
    if not extra_sources and not extra:
        return estimate
    # Preparing one further source: resampled onto the first's grid, its mask (as the first's), normalised.
    preparing = (SOURCE_BYTES + MASK_BYTES + NORMALISED_BYTES) * n if extra_sources else 0
    stages = {k: v + extra / MB for k, v in estimate.stages.items()}
    stages["prepare"] += preparing / MB
    if read_bytes_per_voxel is not None:
        reads = [v * (b or 0) for v, b in extra_sources]
        stages["read"] = max([stages["read"], *((r + extra) / MB for r in reads)])
    return replace(estimate, stages=stages)


def check_translation_memory(
    size: Sequence[int],
    spacing: Sequence[float],
    bundle: Bundle,
    *,
    samples: int = 1,
    read_bytes_per_voxel: float | None = None,
    write: bool = False,
    extra_sources: Sequence[tuple[int, float | None]] = (),
) -> MemoryEstimate:
    """The memory guard of a translation (arguments as :func:`estimate_memory`), before anything is allocated.

    Raises:
        MemoryGuardError: the estimated peak exceeds the limit (``$MEDTRANS_MEMORY_LIMIT_MB`` or a share of the
            available memory); the message names the sizes, the limit and how to change it.
    """
    estimate = estimate_memory(
        size,
        spacing,
        bundle,
        samples=samples,
        read_bytes_per_voxel=read_bytes_per_voxel,
        write=write,
        extra_sources=extra_sources,
    )
    shape = "x".join(map(str, size))
    model_shape = "x".join(map(str, resampled_size(size, spacing, bundle.metadata.get("spacing"))))
    on_grid = f" ({model_shape} on its grid)" if model_shape != shape else ""
    more = f" and {len(extra_sources)} more source(s)" if extra_sources else ""
    check_memory(estimate.needed_mb, f"translating a {shape} volume{more} with {bundle.name!r}{on_grid}")
    return estimate


def check_file_memory(
    header: ImageHeader,
    source_modality: str,
    target_modality: str,
    *,
    model: str | Path | None = None,
    samples: int = 0,
    extra_sources: Mapping[str, ImageHeader] | None = None,
) -> MemoryEstimate:
    """The memory guard of reading, translating and writing a file, from its header before a voxel is read.

    Also refuses, as cheaply, source modalities the model does not accept (:func:`check_model_sources`).

    Args:
        header: :func:`MedTransCore.io.read_header` of the input.
        source_modality, target_modality, model: as for :func:`translate_image` (they pick the bundle).
        samples: uncertainty samples (0: none).
        extra_sources: ``{modality: header}`` of further sources (as ``translate_image``'s ``extra_sources``).
    """
    extra_sources = dict(extra_sources or {})
    modalities = check_source_modalities(source_modality, list(extra_sources), target_modality)
    bundle = select_sources_model(modalities, target_modality, model)
    check_model_sources(bundle, modalities, target_modality)
    return check_translation_memory(
        header.size,
        header.spacing,
        bundle,
        samples=max(samples, 1),
        read_bytes_per_voxel=header.read_bytes_per_voxel,
        write=True,
        extra_sources=[(h.voxels, h.read_bytes_per_voxel) for h in extra_sources.values()],
    )


def translate_image(
    image: sitk.Image,
    source_modality: str,
    target_modality: str,
    *,
    extra_sources: Mapping[str, sitk.Image] | None = None,
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
    extra_dicom_modalities: Mapping[str, str | None] | None = None,
    hints: Mapping[str, object] | None = None,
) -> TranslationResult:
    """Translate a 3D image (and any further co-registered sources) to another modality on exactly its geometry.

    Args:
        image: 3D source image (any pixel type; read through ``MedTransCore.io.read_image`` for validation); its
            grid is the reference grid of every source and of the result.
        source_modality: registry key of the source, e.g. ``"CBCT"``.
        target_modality: registry key of the target, e.g. ``"CT"``.
        extra_sources: further sources of the same patient, ``{modality: image}``: distinct modalities, neither
            ``source_modality`` nor the target, each resampled onto ``image``'s grid (linear, 0 outside it) and
            normalised with its own body mask; the model gets them as channels in this order after ``image``.
            A source that does not overlap ``image`` in physical space is an ``InputError``.
        model: bundle name or folder; ``None`` picks the best installed bundle for the sources.
        steps: sampler steps for diffusion families (``None``: the bundle's default).
        sampler: sampler of diffusion families, ``"ddim"`` or ``"dpmpp"`` (``None``: the bundle's default).
        seed: random seed; the same seed gives the same result.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        uncertainty_samples: ``N >= 2`` runs a stochastic model N times (seeds ``seed .. seed+N-1``) and returns
            the mean and the voxel-wise standard deviation.
        progress: called with ``(fraction in [0, 1], stage words)``.
        cancel: polled between windows and sampler steps; returning True raises ``CancelledError``.
        strict: turn plausibility warnings (of any source) into an ``InputError``.
        dicom_modality: DICOM Modality tag of the source, if known (plausibility check).
        extra_dicom_modalities: the same for the further sources, ``{modality: tag}``.
        hints: keywords of :func:`~MedTransCore.domain.classify_domain` from the file the source came from
            (``domain_hints(info.metadata)``: a phantom's marker); default: the image's own metadata.
    """
    report = progress or (lambda fraction, stage: None)
    if uncertainty_samples == 1 or uncertainty_samples < 0:
        raise InputError("uncertainty needs at least 2 samples")
    extras = dict(extra_sources or {})
    modalities = check_source_modalities(source_modality, list(extras), target_modality)
    # What kind of scan this is picks the default model (never a phantom model for a patient scan); a named model
    # that does not fit gets a warning from check_plausibility below.
    domain = classify_domain(
        sitk.GetArrayViewFromImage(image),
        source_modality,
        image.GetSpacing(),
        **(dict(hints) if hints is not None else domain_hints(image)),
    )
    bundle, _ = choose_bundle(modalities, target_modality, model, domain=domain)
    check_model_sources(bundle, modalities, target_modality)
    orientation = _orientation(bundle)
    for key, extra in extras.items():
        _check_overlap(extra, key, image, source_modality)
    torch_device = resolve_device(device)
    samples = max(uncertainty_samples, 1)
    # Before the first copy of the image: the caller holds it already, everything else is still to come.
    check_translation_memory(
        image.GetSize(),
        image.GetSpacing(),
        bundle,
        samples=samples,
        extra_sources=[(math.prod(extra.GetSize()), None) for extra in extras.values()],
    )
    report(0.0, f"loading model {bundle.name}")
    translator = load_translator(bundle, torch_device)
    if uncertainty_samples and not translator.stochastic:
        raise InputError(f"model {bundle.name!r} ({bundle.family}) is deterministic: it has no uncertainty to sample")
    steps = steps if steps is not None else translator.default_steps
    if sampler is not None:
        translator.use_sampler(sampler)

    # float32 throughout the source grid; whole-volume numpy copies are views or freed as soon as possible.
    original = image
    if orientation is not None:  # axes permuted and flipped, no interpolation: undone exactly at the end
        image = sitk.DICOMOrient(image, orientation)
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
        domain=domain,
    )
    dicom_tags = dict(extra_dicom_modalities or {})
    for key, extra in extras.items():
        extra_array = sitk.GetArrayViewFromImage(extra)
        more = check_plausibility(
            extra_array if extra_array.dtype == np.float32 else extra_array.astype(np.float32),
            key,
            size=extra.GetSize(),
            spacing=extra.GetSpacing(),
            bundle=bundle,
            dicom_modality=dicom_tags.get(key),
            strict=strict,
        )
        warnings += [f"{key} source: {text}" for text in more]
        del extra_array
    check_cancel(cancel)
    report(0.02, "preparing")
    mask_image = body_mask(source, source_modality)
    scheme, windows = mr_scheme(bundle), bundle_windows(bundle.metadata)
    source_window, target_window = windows.get(source_modality), windows.get(target_modality)
    mask = sitk.GetArrayViewFromImage(mask_image).view(bool)
    source_params = normalisation_params(array, source_modality, mask, scheme=scheme, window=source_window)
    del array, mask
    normalised = _normalised_image(source, source_params, scheme, clip=source_window is not None)

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
    if extras:
        channels = [volume]
        for key, extra in extras.items():
            check_cancel(cancel)
            on_model = _extra_on_model_grid(extra, key, image, spacing, scheme, windows.get(key))
            channels.append(torch.from_numpy(sitk.GetArrayFromImage(on_model)).to(translator.dtype)[None, None])
            del on_model
        volume = torch.cat(channels, dim=1)
        del channels
    translator.prepare(volume[:, :1], volume_mask, source_modality, target_modality)
    del volume_mask
    pointwise = translator.pointwise_base(np.zeros(1), target_modality) is not None
    if not pointwise:
        del normalised  # only a voxel-wise base needs the source's own resolution again
    outputs = []
    for index in range(samples):
        sample_seed = seed + index
        span = (0.05 + 0.9 * index / samples, 0.9 / samples)
        label = f"translating ({bundle.family}" + (f", sample {index + 1}/{samples})" if samples > 1 else ")")

        # One window over the whole volume (a slice family): the model's own progress is the run's progress.
        whole = tuple(window) == tuple(volume.shape[2:])
        inner = (lambda f, span=span, label=label: report(span[0] + span[1] * f, label)) if whole else None

        def window_fn(x: torch.Tensor, _seed: int = sample_seed, _inner=inner) -> torch.Tensor:
            torch.manual_seed(_seed)
            return translator.translate_sources(
                x.to(torch_device), modalities, target_modality, steps=steps, seed=_seed, progress=_inner, cancel=cancel
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

    target_params = default_params(target_modality, target_window)  # never the source's: check_source_modalities
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
    result, std_image = keep_outside_window(result, source, source_window, target_window, std_image)
    if orientation is not None:
        result = _reoriented_back(result, original)
        std_image = _reoriented_back(std_image, original) if std_image is not None else None
    if bundle.metadata.get("output_mask") == SOURCE_NONZERO:
        inside = source_nonzero_mask(original)
        result = sitk.Mask(result, inside, 0.0)
        std_image = sitk.Mask(std_image, inside, 0.0) if std_image is not None else None
    settings = {
        "model": bundle.name,
        "version": bundle.metadata["version"],
        "family": bundle.family,
        "steps": steps,
        "sampler": translator.sampler,
        "seed": seed,
        "device": torch_device.type,
        "source_modality": source_modality,
        "source_modalities": modalities,
        "input_domain": {"anatomy": domain.anatomy, "preprocessing": domain.preprocessing, "kind": domain.kind},
        "target_modality": target_modality,
        "uncertainty_samples": uncertainty_samples,
    }
    report(1.0, "done")
    return TranslationResult(result, std_image, bundle, settings, warnings)


def source_nonzero_mask(image: sitk.Image) -> sitk.Image:
    """``sitkUInt8`` 1 where ``image`` is non-zero, holes (enclosed zeros, e.g. ventricles) filled, on its grid."""
    nonzero = sitk.Cast(sitk.NotEqual(image, 0.0), sitk.sitkUInt8)
    return sitk.BinaryFillhole(nonzero, fullyConnected=False, foregroundValue=1)


def _orientation(bundle: Bundle) -> str | None:
    """The bundle's ``orientation`` code (e.g. ``"LPS"``), checked, or ``None``."""
    code = bundle.metadata.get("orientation")
    if code is None:
        return None
    valid = (
        isinstance(code, str)
        and len(code) == 3
        and sorted(next((i for i, axis in enumerate(_ORIENTATION_AXES) if c in axis), 3) for c in code) == [0, 1, 2]
    )
    if not valid:
        raise BundleError(
            f"bundle {bundle.name!r}: field 'orientation' must be a 3-letter code with one of L/R, P/A and I/S "
            f"(e.g. 'LPS'), got {code!r}"
        )
    return code


def _physical_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned physical bounding box (mm) of an image's voxels, their outer faces included."""
    size = image.GetSize()
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint([(n - 0.5) if bit else -0.5 for n, bit in zip(size, bits)])
            for bits in np.ndindex(2, 2, 2)
        ]
    )
    return corners.min(axis=0), corners.max(axis=0)


def _check_overlap(extra: sitk.Image, modality: str, reference: sitk.Image, reference_modality: str) -> None:
    """Refuse a further source that does not share any space with the first (wrong file, other patient)."""
    if extra.GetDimension() != 3 or extra.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"the {modality} source is not a 3D scalar volume")
    low, high = _physical_box(extra)
    ref_low, ref_high = _physical_box(reference)
    overlaps = bool(np.all(low < ref_high) and np.all(ref_low < high))
    if overlaps:
        # The bounding boxes of oblique grids may touch where the grids do not: is any voxel centre of the
        # reference grid inside the source's grid?
        ones = sitk.Image(extra.GetSize(), sitk.sitkUInt8) + 1
        ones.CopyInformation(extra)
        overlaps = bool(
            sitk.GetArrayViewFromImage(
                sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            ).any()
        )
    if not overlaps:
        box = " to ".join("(" + ", ".join(f"{v:.1f}" for v in corner) + ")" for corner in (low, high))
        ref_box = " to ".join("(" + ", ".join(f"{v:.1f}" for v in corner) + ")" for corner in (ref_low, ref_high))
        raise InputError(
            f"the {modality} source does not overlap the {reference_modality} source in physical space "
            f"({box} mm against {ref_box} mm); sources must be co-registered scans of the same patient"
        )


def _normalised_image(image: sitk.Image, params: dict[str, float], scheme: str, clip: bool = False) -> sitk.Image:
    """The affine normalisation of a float32 image; with ``brain_percentiles`` the background (voxels exactly 0) is
    set to -1 afterwards, and with ``clip`` (an intensity window) the result is clipped to [-1, 1], as
    :func:`~MedTransCore.modalities.normalise_with_scheme` does for training data (:func:`affine_image` derives its
    map from two points, so it must stay a pure affine map)."""
    normalised = affine_image(image, lambda a: normalise(a, params))
    if scheme == "brain_percentiles":
        normalised = sitk.Mask(normalised, sitk.NotEqual(image, 0.0), outsideValue=-1.0)
    if clip:
        normalised = sitk.Clamp(normalised, lowerBound=-1.0, upperBound=1.0)
    return normalised


def mr_scheme(bundle: Bundle) -> str:
    """The MR normalisation scheme a bundle was trained with (``normalisation.mr_scheme``; default the original)."""
    return (bundle.metadata.get("normalisation") or {}).get("mr_scheme", MR_SCHEMES[0])


def _extra_on_model_grid(
    extra: sitk.Image,
    modality: str,
    reference: sitk.Image,
    spacing: Sequence[float] | None,
    scheme: str,
    window: tuple[float, float] | None = None,
) -> sitk.Image:
    """A further source, normalised with its own body mask (or the bundle's ``window`` of its modality) on the
    reference (first source's) grid, then resampled onto the model's spacing exactly like the first source.

    The reference is the first source as the model sees it (reoriented when the bundle asks for an orientation):
    resampling in physical space onto it reorients the further source too, without a copy of its own.
    """
    on_grid = resample_like(
        extra if extra.GetPixelID() == sitk.sitkFloat32 else sitk.Cast(extra, sitk.sitkFloat32),
        reference,
        default_value=0.0,
    )
    mask = body_mask(on_grid, modality)
    params = normalisation_params(
        sitk.GetArrayViewFromImage(on_grid), modality, sitk.GetArrayViewFromImage(mask).view(bool), scheme, window
    )
    del mask
    normalised = _normalised_image(on_grid, params, scheme, clip=window is not None)
    del on_grid
    return resample_to_spacing(normalised, spacing)


def _reoriented_back(result: sitk.Image, original: sitk.Image) -> sitk.Image:
    """A result computed on the reoriented source put back on exactly the original source's geometry."""
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(original.GetDirection())
    back = sitk.DICOMOrient(result, code)
    if back.GetSize() == original.GetSize() and _same_geometry(back, original, atol=1e-4):
        back.CopyInformation(original)  # the same voxels; only rounding in the origin differs
        return back
    # Not a pure permutation (cannot happen for DICOMOrient's own codes): resample onto the voxel centres.
    return resample_like(result, original, interpolator=sitk.sitkNearestNeighbor, default_value=0.0)


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


def _same_geometry(a: sitk.Image, b: sitk.Image, atol: float = 1e-9) -> bool:
    pairs = ((a.GetSpacing(), b.GetSpacing()), (a.GetOrigin(), b.GetOrigin()), (a.GetDirection(), b.GetDirection()))
    return all(np.allclose(x, y, rtol=0, atol=atol) for x, y in pairs)


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
