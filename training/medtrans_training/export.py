"""Turn a run folder into a model bundle, keeping only the pairs on which it beat histogram matching.

The run's weights (EMA where kept) go into a provisional bundle, which is scored on the run's held-out
cases with the exact inference path (``medtrans_training.evaluate``); the final bundle lists the pairs whose
mean MAE was lower *and* mean SSIM higher than the ``histogram-matching`` baseline, records the dropped
ones with the numbers, the measured metrics, the training commands, data and device.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from MedTransCore.bundles import Bundle, save_bundle
from MedTransCore.errors import BundleError, InputError
from MedTransCore.modalities import CT_WINDOW_HU, MR_CANONICAL_HIGH, MR_UPPER_PERCENTILE

from .data import case_loaders, resolve_pairs
from .evaluate import BASELINES, evaluate_cases, json_safe, markdown_table, split_pairs, summarise
from .stages.base import CHECKPOINT_NAME, get_stage_class
from .trainer import CONFIG_NAME, RUN_NAME

NORMALISATION = {
    "scheme": "MedTransCore.modalities",
    "ct_window_hu": list(CT_WINDOW_HU),
    "mr_upper_percentile": MR_UPPER_PERCENTILE,
    "mr_canonical_high": MR_CANONICAL_HIGH,
    "mask": "MedTransCore.preprocess.body_mask of the source",
}


def load_run(run_dir: str | Path) -> tuple[dict, dict, dict]:
    """``(config, run record, checkpoint)`` of a run folder (checkpoint read with ``weights_only=True``)."""
    run_dir = Path(run_dir)
    for name in (CONFIG_NAME, CHECKPOINT_NAME):
        if not (run_dir / name).is_file():
            raise InputError(f"{run_dir} is not a finished run folder (no {name})")
    config = json.loads((run_dir / CONFIG_NAME).read_text())
    record = json.loads((run_dir / RUN_NAME).read_text()) if (run_dir / RUN_NAME).is_file() else {}
    checkpoint = torch.load(run_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    return config, record, checkpoint


def run_bundle_parts(config: dict, checkpoint: dict) -> tuple[dict[str, dict], dict[str, Any], str]:
    """Rebuild the stage on the CPU with the checkpoint's weights; returns ``(weights, fields, family)``."""
    stage = get_stage_class(config["stage"])(config, "cpu")
    if stage.family is None:
        raise InputError(f"stage {stage.name!r} only feeds a later stage; export the final stage's run")
    modules = stage.build_modules()
    for name, module in modules.items():
        module.load_state_dict(checkpoint["modules"][name])
    ema = {}
    for name, state in checkpoint.get("ema", {}).items():
        copy = get_stage_class(config["stage"])(config, "cpu").build_modules()[name]
        copy.load_state_dict(state)
        ema[name] = copy.eval()
    stage.attach(modules, {}, ema)
    return stage.bundle_weights(), stage.bundle_fields(), stage.family


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    name: str | None = None,
    keep_all_pairs: bool = False,
    max_cases: int | None = None,
    device: str = "auto",
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Bundle:
    """Export ``run_dir`` to the bundle folder ``out`` (which must not exist).

    Args:
        run_dir: a finished run folder.
        out: the bundle folder to create.
        name: bundle name (default: ``export.name`` of the config, else the folder name of ``out``).
        keep_all_pairs: list every trained pair even where histogram matching was better (still recorded).
        max_cases: evaluate at most this many held-out cases.
        device: device for the held-out evaluation.
        command: the export command line (recorded; default ``sys.argv``).
        progress: called with a line of text per translation.

    Raises:
        BundleError: no held-out case, or no pair beat histogram matching (without ``keep_all_pairs``).
    """
    out = Path(out)
    if out.exists():
        raise BundleError(f"{out} already exists; choose a new folder for the bundle")
    config, record, checkpoint = load_run(run_dir)
    weights, fields, family = run_bundle_parts(config, checkpoint)
    data, export = config["data"], config.get("export", {})
    name = name or export.get("name") or out.name
    held_out = case_loaders(data, "val")[:max_cases]
    if not held_out:
        raise BundleError(
            "the run's data config has no held-out case (data.val_cases, val_fraction or phantom.val_seeds)"
        )
    pairs = [list(p) for p in resolve_pairs(list(data["modalities"]), data.get("pairs", "all"))]
    metadata: dict[str, Any] = {
        "name": name,
        "family": family,
        "version": str(export.get("version", "0.1.0")),
        "description": export.get("description", f"{family} model trained with medtrans-train ({config['stage']})"),
        "modalities": list(data["modalities"]),
        "pairs": pairs,
        "spacing": data.get("spacing"),
        "grid": data.get("patch"),
        "normalisation": NORMALISATION,
        "sampler": fields.get("sampler"),
        "network": fields["network"],
        "training": {},
        "metrics": {},
        "licence": export.get("licence", "Apache-2.0"),
        "limitations": export.get("limitations", ""),
        **{k: v for k, v in fields.items() if k not in ("network", "sampler")},
    }
    provisional = out.parent / f".{out.name}.provisional-{os.getpid()}"
    shutil.rmtree(provisional, ignore_errors=True)
    try:
        bundle = save_bundle(provisional, metadata, weights)
        rows = evaluate_cases(bundle, held_out, pairs=[tuple(p) for p in pairs], device=device, progress=progress)
    finally:
        shutil.rmtree(provisional, ignore_errors=True)
    summary = summarise(rows)
    kept, dropped = split_pairs(summary, name)
    if keep_all_pairs:
        kept = pairs
    if not kept:
        raise BundleError(
            "the model beat histogram matching on no held-out pair; train longer or pass --keep-all-pairs\n"
            + markdown_table(summary)
        )
    metadata["pairs"] = kept
    metadata["metrics"] = {
        "held_out": json_safe(summary),
        "cases": [case for case, _ in held_out],
        "definition": "MedTransCore.metrics.compute_metrics of translate_image outputs, mean over held-out cases",
        "baselines": list(BASELINES),
    }
    metadata["training"] = {
        "stage": config["stage"],
        "commands": record.get("commands", []),
        "export_command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "device": record.get("device", {}),
        "steps": int(checkpoint["step"]),
        "data": dict(data),
        "config": config,
        "dropped_pairs": {} if keep_all_pairs else dropped,
        "pairs_not_beating_histogram_matching": dropped,
    }
    return save_bundle(out, metadata, weights)
