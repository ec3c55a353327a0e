"""Words and numbers for the page: metric rows, view captions, select items (pure functions, no trame)."""

from __future__ import annotations

import math

import SimpleITK as sitk

from MedTransCore.bundles import Bundle
from MedTransCore.cli.tables import format_value
from MedTransCore.metrics import metric_unit
from MedTransCore.modalities import MODALITIES, get_modality

from . import windows

AUTO_MODEL = "auto"
METRIC_LABELS = {
    "MS_SSIM": "MS-SSIM",
    "MAE_air": "MAE air",
    "MAE_soft_tissue": "MAE soft tissue",
    "MAE_bone": "MAE bone",
}
# The baselines every result is compared with (``TranslationOutputs.baselineMetrics`` keys) and their column titles.
BASELINES = {"source as is": "Source as is", "histogram matching": "Histogram matching"}
HIGHER_IS_BETTER = frozenset(("PSNR", "SSIM", "MS_SSIM", "NCC"))
METRIC_HELP = {
    "MAE": "mean absolute error",
    "ME": "mean error (bias)",
    "PSNR": "peak signal-to-noise ratio",
    "SSIM": "structural similarity (1 = identical)",
    "MS_SSIM": "multi-scale SSIM",
    "NMSE": "normalised mean squared error",
    "NCC": "normalised cross-correlation",
}


def metric_rows(
    metrics: dict[str, float], modality: str, baselines: dict[str, dict[str, float]] | None = None
) -> list[dict]:
    """Rows of the metrics table, in the logic's order: name, label, value, text, unit, help, and the baselines.

    Args:
        metrics: the synthetic volume's metrics against the reference.
        modality: the target modality (units).
        baselines: ``{"source as is": metrics, "histogram matching": metrics}`` (same reference, same mask), or
            ``None``. Each row gets ``baselines``: ``[{"name", "value", "text"}]`` in :data:`BASELINES` order, and
            ``worse``: the model does worse than at least one baseline on this metric.
    """
    rows = []
    for name, value in metrics.items():
        row = {
            "name": name,
            "label": METRIC_LABELS.get(name, name),
            "value": _number(value),
            "text": format_value(value),
            "unit": metric_unit(name, modality),
            "help": METRIC_HELP.get(name, ""),
            "baselines": [],
            "worse": False,
        }
        for baseline in BASELINES:
            other = (baselines or {}).get(baseline)
            if other is None:
                continue
            theirs = other.get(name, math.nan)
            row["baselines"].append({"name": baseline, "value": _number(theirs), "text": format_value(theirs)})
            row["worse"] = row["worse"] or worse_than(name, value, theirs)
        rows.append(row)
    return rows


def _number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def worse_than(name: str, model: float, baseline: float) -> bool:
    """The model's value of metric ``name`` is worse than the baseline's (NaN on either side: not worse).

    Higher is better for PSNR, SSIM, MS-SSIM and NCC; for ME the smaller magnitude is better; lower otherwise.
    """
    if model is None or baseline is None or math.isnan(model) or math.isnan(baseline):
        return False
    if name in HIGHER_IS_BETTER:
        return model < baseline
    if name == "ME":
        return abs(model) > abs(baseline)
    return model > baseline


def baseline_columns(baselines: dict[str, dict[str, float]] | None) -> list[str]:
    """Titles of the baseline columns the metrics table shows (those the run computed)."""
    return [BASELINES[name] for name in BASELINES if baselines and name in baselines]


def modality_items() -> list[dict]:
    return [{"title": f"{m.description} ({m.key})", "value": m.key} for m in MODALITIES.values()]


def model_items(bundles: list[Bundle]) -> list[dict]:
    """The model choices for a pair: automatic first, then each installed bundle (empty when none fits)."""
    if not bundles:
        return []
    named = [{"title": f"{b.name} · {b.family}", "value": b.name} for b in bundles]
    return [{"title": "Automatic (best installed model)", "value": AUTO_MODEL}, *named]


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
        "reference": (
            f"REFERENCE · {modality_word(reference_modality)} (acquired)",
            reference_caption_subtitle(reference_modality, target_modality),
            "",
        )
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


def reference_caption_subtitle(reference_modality: str | None, target_modality: str) -> str:
    """The reference view's subtitle: empty when it is the target's modality, else why it is not compared."""
    if reference_modality is None or reference_modality == target_modality:
        return ""
    return f"not the target ({modality_word(target_modality)}): not compared"


def followed_reference_modality(current: str, target: str, *, named: bool, explicit: bool) -> str:
    """The reference's modality once the target modality is ``target``.

    A reference whose modality the user chose (``explicit``) or its name/series description gave (``named``: "t2",
    "FLAIR", ...) keeps it. One guessed from its DICOM tag or intensities only knows CT-like from MR: it takes the
    target modality when the target is of the same kind (an MR reference becomes the MR T2 target, never a CT).
    """
    if explicit or named or get_modality(current).is_ct != get_modality(target).is_ct:
        return current
    return target


def metrics_note(
    target: str, *, compared: bool, reference_modality: str | None, reference_changed: bool, has_result: bool
) -> str:
    """The one line under the metrics table; it never contradicts the reference shown.

    Args:
        target: the result's target modality (or the chosen one before a run).
        compared: the result was compared with a reference (there are metrics).
        reference_modality: the reference's modality now, ``None`` without one.
        reference_changed: the reference was replaced, removed or re-labelled after the run.
        has_result: there is a synthetic volume.
    """
    word = modality_word(target)
    if not has_result:
        return "Metrics appear after a translation with a reference volume."
    if reference_changed:
        if reference_modality is None:
            return "The reference was removed after this translation: its difference map and metrics were cleared."
        return "The reference changed after this translation: press Translate to compare the result with it."
    if compared:
        return (
            f"Synthetic vs acquired {word} inside the body (reference body mask), next to two baselines computed "
            "the same way: the source as is, and the source histogram-matched to the reference."
        )
    if reference_modality is not None and reference_modality != target:
        return f"The reference is {modality_word(reference_modality)}, not {word}: no difference map or metrics."
    if reference_modality is not None:
        return "This result was not compared with the reference: press Translate to compare them."
    return f"No reference volume: upload the acquired {word} to compute metrics."


def model_card(preflight) -> dict[str, str]:
    """What the page says about the model that will run (``{}`` when none will): a ``Preflight`` in words."""
    if not getattr(preflight, "model", ""):
        return {}
    how = "Automatic choice" if preflight.automatic else "Chosen model"
    return {
        "title": f"{how}: {preflight.model}",
        "domain": f"Trained on: {preflight.modelDomain}" if preflight.modelDomain else "",
        "input": f"This source looks like: {preflight.inputDomain}" if preflight.inputDomain else "",
        "use": preflight.intendedUse,
        "limitations": preflight.limitations,
    }


def initial_state(max_upload_bytes: int) -> dict:
    """Every state variable the page binds, with its value before anything is loaded."""
    return {
        "trame__title": "MedTrans",
        "status": "ready: load the demo phantom or upload a volume",
        "progress": 0.0,
        "running": False,
        "cancel_ready": False,  # Cancel acts (a click right after Translate is a double click, ignored)
        "uploading": "",  # "source", "reference" or "extra" while an upload is read
        "max_upload_bytes": max_upload_bytes,
        "has_source": False,
        "source_info": "",
        "input_warnings": [],  # plausibility and domain warnings about the sources, before a run
        "has_reference": False,
        "reference_info": "",
        "reference_modality": "CT",
        "reference_warnings": [],  # overlap, field of view, modality
        "reference_note": "",  # what happened to the reference when the source changed
        "extra_sources": [],  # additional sources: {"id", "name", "modality", "info"}, in the order added
        "source_modality": "CBCT",
        "target_modality": "CT",
        "modality_items": modality_items(),
        "model": AUTO_MODEL,
        "model_items": [],
        "model_card": {},  # the model that will run: title, domain, input, use, limitations
        "refusal": "",  # non-empty: Translate is off, and this says why
        "confirm_demo": False,  # the dialog asking before the demo replaces a result
        "window_preset": windows.AUTO,
        "window_items": windows.window_items(),
        "show_difference": False,
        "show_3d": False,
        "results_open": False,
        "difference_bar": {},  # {"high", "low", "unit"} while the difference overlay is shown
        **empty_result(),
    }


def empty_result() -> dict:
    """The result part of the state when there is no synthetic volume."""
    return {
        "has_result": False,
        "has_difference": False,
        "result_is_ct": False,
        "metrics": [],
        "metric_columns": [],  # titles of the baseline columns
        "baseline_losses": [],  # "the model does worse than ..." lines (the chip over the table)
        "metrics_note": metrics_note(
            "CT", compared=False, reference_modality=None, reference_changed=False, has_result=False
        ),
        "warnings": [],
        "limitations": "",  # the model's own statement of what it cannot do
        "result_summary": "No synthetic volume yet.",
        "download_name_nifti": "synthetic.nii.gz",
        "download_name_dicom": "synthetic_dicom.zip",
    }
