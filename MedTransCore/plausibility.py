"""Does the source look like the modality it is declared as, and does it fit the model?

Each check returns human-readable warnings; front ends show them, and ``strict`` turns them into an error,
so a CT declared as MR (or a whole-body scan given to a head model) is flagged instead of giving garbage.
With the input's domain (:func:`MedTransCore.domain.classify_domain`), a model run outside its training domain (a whole
head given to a skull-stripped-brain model, a scan not marked as a phantom given to a phantom model) is flagged too.
"""

from __future__ import annotations

import numpy as np

from .bundles import Bundle
from .domain import InputDomain, misfit_warning
from .errors import InputError
from .modalities import get_modality

# A CT in HU has air near -1000 HU somewhere in the field of view (outside the body or in the airways).
CT_AIR_HU = -500.0
# MR intensities are non-negative; a robust minimum far below zero suggests HU.
MR_NEGATIVE_LIMIT = -100.0
# The field of view may exceed the model's by this factor (sliding windows) before we warn.
FOV_RATIO_LIMIT = 2.5
# Below this many model voxels along an axis the model sees next to nothing (its output is then near constant).
MIN_MODEL_VOXELS = 4
# Intensity percentiles are taken on about this many voxels (a strided sample of large volumes).
PERCENTILE_SAMPLE = 2**21


def intensity_warnings(array: np.ndarray, modality: str) -> list[str]:
    """Warnings when the intensity range contradicts the declared modality."""
    m = get_modality(modality)
    low, high = np.percentile(_sample(array), [0.5, 99.5])
    if m.is_ct:
        if low > CT_AIR_HU:
            return [
                f"declared {modality} but the image has no air near -1000 HU (0.5th percentile {low:.0f}); "
                "is it really a CT in Hounsfield units?"
            ]
        if high > 10000:
            return [f"declared {modality} but values reach {high:.0f}; CT in HU rarely exceeds 4000 outside metal"]
    elif low < MR_NEGATIVE_LIMIT:
        looks_ct = low < CT_AIR_HU
        hint = " it looks like a CT in HU" if looks_ct else ""
        return [f"declared {modality} but MR is non-negative and this image goes down to {low:.0f};{hint}"]
    return []


def _sample(array: np.ndarray) -> np.ndarray:
    """At most about ``PERCENTILE_SAMPLE`` evenly strided voxels: percentiles copy what they get."""
    flat = array.reshape(-1)
    return flat[:: max(1, flat.size // PERCENTILE_SAMPLE)]


def dicom_warnings(dicom_modality: str | None, modality: str) -> list[str]:
    expected = get_modality(modality).dicom_modality
    if dicom_modality and dicom_modality.strip().upper() not in (expected, "OT"):
        return [f"declared {modality} but the DICOM Modality tag says {dicom_modality!r} (expected {expected})"]
    return []


def field_of_view_warnings(size: tuple[int, ...], spacing: tuple[float, ...], bundle: Bundle) -> list[str]:
    """Compare the physical extent (x, y, z in mm) with the model's field of view, both ways.

    Far larger than the field of view: anatomy the model never saw. Fewer than :data:`MIN_MODEL_VOXELS` of the
    model's voxels along an axis (2x2x2 voxels, a 1e-4 mm spacing): the model sees next to nothing and its
    output is close to constant.
    """
    grid, model_spacing = bundle.metadata.get("grid"), bundle.metadata.get("spacing")
    extent = [n * s for n, s in zip(size, spacing)]
    warnings = []
    if model_spacing:
        small = [(axis, e, s) for axis, e, s in zip("xyz", extent, model_spacing) if e < MIN_MODEL_VOXELS * s]
        if small:
            where = ", ".join(f"{e:.3g} mm along {axis}" for axis, e, _ in small)
            warnings.append(
                f"the image is tiny for the model {bundle.name!r} ({where}; it works on {small[0][2]:g} mm voxels): "
                f"the model sees fewer than {MIN_MODEL_VOXELS} of its voxels, so its output is close to constant; "
                "check the spacing in the header"
            )
    if not grid or not model_spacing:
        return warnings
    fov = bundle.metadata.get("field_of_view_mm") or [g * s for g, s in zip(grid, model_spacing)]
    for axis, e, f in zip("xyz", extent, fov):
        if e > FOV_RATIO_LIMIT * f:
            warnings.append(
                f"the image is {e:.0f} mm along {axis}, far more than the {f:.0f} mm the model "
                f"{bundle.name!r} was trained on; results outside that anatomy are unreliable"
            )
    return warnings


def domain_warnings(domain: InputDomain, bundle: Bundle | None = None) -> list[str]:
    """Warnings about the input's domain: outside the model's training domain, or a phantom look-alike unmarked.

    The first is the warning :func:`MedTransCore.bundles.choose_bundle` gives for a named model (the default never
    misfits); the second says why a phantom saved without its marker does not get the phantom models by default.
    """
    warnings = []
    if bundle is not None:
        warning = misfit_warning(bundle.name, bundle.domain, domain)
        if warning:
            warnings.append(warning)
    if domain.phantom_signature:
        warnings.append(
            "the image looks like a MedTrans phantom (air at exactly -1000 HU, non-integer tissue values) but carries "
            "no phantom marker, so it is treated as a scan; if it is a phantom, name the phantom model with --model"
        )
    return warnings


def check_plausibility(
    array: np.ndarray,
    modality: str,
    *,
    size: tuple[int, ...],
    spacing: tuple[float, ...],
    bundle: Bundle | None = None,
    dicom_modality: str | None = None,
    domain: InputDomain | None = None,
    strict: bool = False,
) -> list[str]:
    """All plausibility warnings for a source volume; with ``strict`` any warning is an ``InputError``.

    Args:
        array: ``(Z, Y, X)`` source intensities.
        modality: the declared source modality key.
        size: image size ``(x, y, z)``; spacing: ``(x, y, z)`` mm.
        bundle: the model that will run (for its field of view).
        dicom_modality: the DICOM Modality tag of the source, when it came from DICOM.
        domain: the input's :func:`MedTransCore.domain.classify_domain` (:func:`domain_warnings`).
    """
    warnings = dicom_warnings(dicom_modality, modality) + intensity_warnings(array, modality)
    if bundle is not None:
        warnings += field_of_view_warnings(size, spacing, bundle)
    if domain is not None:
        warnings += domain_warnings(domain, bundle)
    if strict and warnings:
        raise InputError("; ".join(warnings) + " (--strict)")
    return warnings
