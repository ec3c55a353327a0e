"""Words and numbers for the page: metric rows, view captions, select items (pure functions, no trame)."""

from __future__ import annotations

import math

import SimpleITK as sitk

from MedTransCore.bundles import Bundle
from MedTransCore.cli.tables import format_value
from MedTransCore.metrics import metric_unit
from MedTransCore.modalities import MODALITIES, get_modality

AUTO_MODEL = "auto"
# Window/level presets for CT-like volumes (HU): name -> (window, level); "auto" keeps the modality default.
CT_PRESETS: dict[str, tuple[float, float] | None] = {
    "auto": None,
    "soft tissue": (400.0, 40.0),
    "brain": (80.0, 40.0),
    "bone": (1800.0, 400.0),
    "lung": (1500.0, -600.0),
    "full range": (4024.0, 988.0),
}
METRIC_LABELS = {
    "MS_SSIM": "MS-SSIM",
    "MAE_air": "MAE air",
    "MAE_soft_tissue": "MAE soft tissue",
    "MAE_bone": "MAE bone",
}
METRIC_HELP = {
    "MAE": "mean absolute error",
    "ME": "mean error (bias)",
    "PSNR": "peak signal-to-noise ratio",
    "SSIM": "structural similarity (1 = identical)",
    "MS_SSIM": "multi-scale SSIM",
    "NMSE": "normalised mean squared error",
    "NCC": "normalised cross-correlation",
}


def metric_rows(metrics: dict[str, float], modality: str) -> list[dict]:
    """Rows of the metrics table, in the logic's order: name, label, value, text, unit, help."""
    return [
        {
            "name": name,
            "label": METRIC_LABELS.get(name, name),
            "value": None if math.isnan(value) else float(value),
            "text": format_value(value),
            "unit": metric_unit(name, modality),
            "help": METRIC_HELP.get(name, ""),
        }
        for name, value in metrics.items()
    ]


def modality_items() -> list[dict]:
    return [{"title": f"{m.description} ({m.key})", "value": m.key} for m in MODALITIES.values()]


def model_items(bundles: list[Bundle]) -> list[dict]:
    """The model choices for a pair: automatic first, then each installed bundle (empty when none fits)."""
    if not bundles:
        return []
    named = [{"title": f"{b.name} · {b.family}", "value": b.name} for b in bundles]
    return [{"title": "Automatic (best installed model)", "value": AUTO_MODEL}, *named]


def window_items() -> list[dict]:
    titles = {"auto": "Modality default", "full range": "Full range"}
    items = []
    for name, preset in CT_PRESETS.items():
        suffix = f" (W {preset[0]:.0f} / L {preset[1]:.0f})" if preset else ""
        items.append({"title": titles.get(name, name.capitalize()) + suffix, "value": name})
    return items


def volume_info(role: str, name: str, image: sitk.Image) -> str:
    """``Source: head (CBCT) · 64×64×64 voxels · 3.0×3.0×3.0 mm``."""
    return f"{role}: {volume_size(name, image)}"


def volume_size(name: str, image: sitk.Image) -> str:
    """``head · 64×64×64 voxels · 3.0×3.0×3.0 mm``."""
    size = "×".join(map(str, image.GetSize()))
    spacing = "×".join(f"{s:.2g}" for s in image.GetSpacing())
    return f"{name} · {size} voxels · {spacing} mm"


def modality_word(key: str) -> str:
    """``CT`` for CT, ``MR T1`` for MR_T1: short enough for a view caption."""
    get_modality(key)
    return key.replace("_", " ")


def sources_words(settings: dict) -> str:
    """``MR T1`` for one source, ``MR T1 + MR FLAIR`` for several (``source_modalities``, the reference first)."""
    keys = settings.get("source_modalities") or [settings["source_modality"]]
    return " + ".join(modality_word(key) for key in keys)


def extra_source_modality(guess: str | None, taken: set[str], target: str) -> str:
    """The modality of an added source: the guess when it is free, else the first modality neither used nor the target."""
    if guess is not None and guess not in taken and guess != target:
        return guess
    return next((key for key in MODALITIES if key not in taken and key != target), guess or next(iter(MODALITIES)))


def result_summary(settings: dict) -> str:
    """``Synthetic CT from CBCT · model identity 0.1.0 (identity) · seed 0 · cpu``."""
    steps = f" · {settings['steps']} steps" if settings.get("steps") else ""
    return (
        f"Synthetic {modality_word(settings['target_modality'])} from {sources_words(settings)}"
        f" · model {settings['model']} {settings.get('version', '')} ({settings.get('family', '?')})"
        f"{steps} · seed {settings.get('seed', 0)} · {settings.get('device', '?')}"
    )


def view_captions(
    source_modality: str,
    target_modality: str,
    *,
    has_source: bool,
    reference_modality: str | None,
    settings: dict | None,
    difference_span: float | None,
) -> dict[str, tuple[str, str, str]]:
    """``role -> (title, subtitle, empty-view hint)`` for the three slice views.

    Args:
        reference_modality: modality of the reference volume, ``None`` without one.
        settings: the last translation's settings, ``None`` before any.
        difference_span: half-width of the difference overlay's window when it is shown, else ``None``.
    """
    source, target = modality_word(source_modality), modality_word(target_modality)
    captions = {
        "source": (f"SOURCE · {source}", "", "")
        if has_source
        else ("SOURCE", "", "Load the demo phantom or upload a volume"),
        "synthetic": (f"SYNTHETIC {target}", "", f"Press Translate to compute a synthetic {target}"),
        "reference": (f"REFERENCE · {modality_word(reference_modality)} (acquired)", "", "")
        if reference_modality
        else ("REFERENCE", "", f"Optional: upload the acquired {target} for a difference map and metrics"),
    }
    if settings is not None:
        made = f"made by model {settings['model']} from {sources_words(settings)}"
        if difference_span is not None:
            unit = get_modality(settings["target_modality"]).unit
            made = f"difference to reference: blue −{difference_span:.0f} … red +{difference_span:.0f} {unit}"
        captions["synthetic"] = (f"SYNTHETIC {modality_word(settings['target_modality'])}", made, "")
    return captions


def initial_state(max_upload_bytes: int) -> dict:
    """Every state variable the page binds, with its value before anything is loaded."""
    return {
        "trame__title": "MedTrans",
        "status": "ready: load the demo phantom or upload a volume",
        "progress": 0.0,
        "running": False,
        "uploading": "",  # "source", "reference" or "extra" while an upload is read
        "max_upload_bytes": max_upload_bytes,
        "has_source": False,
        "has_result": False,
        "has_difference": False,
        "result_is_ct": False,
        "source_info": "",
        "reference_info": "",
        "extra_sources": [],  # additional sources: {"id", "name", "modality", "info"}, in the order added
        "source_modality": "CBCT",
        "target_modality": "CT",
        "modality_items": modality_items(),
        "model": AUTO_MODEL,
        "model_items": [],
        "window_preset": "auto",
        "window_items": window_items(),
        "show_difference": False,
        "show_3d": False,
        "warnings": [],
        **empty_result(),
    }


def empty_result() -> dict:
    """The result part of the state when there is no synthetic volume."""
    return {
        "has_result": False,
        "has_difference": False,
        "metrics": [],
        "metrics_note": "Metrics appear after a translation with a reference volume.",
        "limitations": "",  # the model's own statement of what it cannot do
        "result_summary": "No synthetic volume yet.",
        "download_name_nifti": "synthetic.nii.gz",
        "download_name_dicom": "synthetic_dicom.zip",
    }
