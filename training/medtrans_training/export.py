"""Turn a run folder into a model bundle that lists only the pairs chosen on validation cases.

The run's weights (EMA where kept) go into a provisional bundle listing every trained pair, which is scored with the
exact inference path (``medtrans_training.evaluate``) on the run's validation cases (``data.val_cases``,
``val_fraction`` or ``phantom.val_seeds``) to choose the pairs, and on its test cases (``data.test_cases``,
``test_fraction`` or ``phantom.test_seeds``) to report them (``medtrans_training.selection``: lower MAE, higher
SSIM and PSNR than identity and histogram matching). The bundle records both, the dropped pairs with their reasons,
the training cases, commands and the step each run reached.
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
from MedTransCore.intensity_window import FIELD as INTENSITY_WINDOW
from MedTransCore.modalities import CT_WINDOW_HU, MR_CANONICAL_HIGH, MR_UPPER_PERCENTILE

from .data import case_loaders, intensity_windows, resolve_pairs
from .selection import select_pairs
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


def bundle_metadata(
    config: dict, fields: dict[str, Any], family: str, *, name: str, export: dict[str, Any]
) -> dict[str, Any]:
    """The metadata every exported bundle shares: identity, data grid, the stage's own fields and ``export``'s
    words (pairs, grid, training and metrics are the caller's)."""
    data = config["data"]
    return {
        "name": name,
        "family": family,
        "version": str(export.get("version", "0.1.0")),
        "description": export.get("description", f"{family} model trained with medtrans-train ({config['stage']})"),
        "modalities": list(data["modalities"]),
        "pairs": [],
        "spacing": data.get("spacing"),
        "grid": data.get("patch"),
        # the MR scheme the run's data were normalised with, when not the original one, and its intensity windows
        "normalisation": {
            **NORMALISATION,
            **({"mr_scheme": data["normalisation"]} if data.get("normalisation") else {}),
            **({INTENSITY_WINDOW: _windows(data)} if data.get(INTENSITY_WINDOW) else {}),
        },
        "sampler": fields.get("sampler"),
        "network": fields["network"],
        "training": {},
        "metrics": {},
        "licence": export.get("licence", "Apache-2.0"),
        "limitations": export.get("limitations", ""),
        # anatomy, preprocessing, real or phantom training data: what the default model choice matches inputs to
        **({"domain": dict(export["domain"])} if export.get("domain") else {}),
        # trained on skull-stripped scans: the output is 0 outside the source's brain, as in its training targets
        **(
            {"output_mask": "source_nonzero"}
            if (export.get("domain") or {}).get("preprocessing") == "skull-stripped"
            else {}
        ),
        **{k: v for k, v in fields.items() if k not in ("network", "sampler")},
    }


def _windows(data: dict) -> dict[str, list[float]]:
    """``data.intensity_window`` as the bundle records it, ``{modality: [low, high]}`` (checked as training did)."""
    return {key: list(window) for key, window in intensity_windows(data).items()}


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
        keep_all_pairs: list every trained pair a test case holds, even where the rule says no (still recorded).
        max_cases: use at most this many validation and this many test cases.
        device: device for the evaluation.
        command: the export command line (recorded; default ``sys.argv``).
        progress: called with a line of text per translation.

    Raises:
        BundleError: no validation or test case, or no pair to list (without ``keep_all_pairs``).
        InputError: a case in two of the training, validation and test splits.
    """
    out = Path(out)
    if out.exists():
        raise BundleError(f"{out} already exists; choose a new folder for the bundle")
    config, record, checkpoint = load_run(run_dir)
    weights, fields, family = run_bundle_parts(config, checkpoint)
    data, export = config["data"], config.get("export", {})
    name = name or export.get("name") or out.name
    validation = case_loaders(data, "val")[:max_cases]
    test = case_loaders(data, "test")[:max_cases]
    train_cases = [case for case, _ in case_loaders(data, "train")]
    pairs = [tuple(p) for p in resolve_pairs(list(data["modalities"]), data.get("pairs", "all"))]
    metadata = bundle_metadata(config, fields, family, name=name, export=export)
    metadata["pairs"] = [list(p) for p in pairs]
    provisional = out.parent / f".{out.name}.provisional-{os.getpid()}"
    shutil.rmtree(provisional, ignore_errors=True)
    try:
        bundle = save_bundle(provisional, metadata, weights)
        selection = select_pairs(
            bundle,
            pairs,
            validation,
            test,
            validation_data="the run config's validation split (data.val_cases, val_fraction or phantom.val_seeds)",
            test_data="the run config's test split (data.test_cases, test_fraction or phantom.test_seeds)",
            train_cases=train_cases,
            keep_all_pairs=keep_all_pairs,
            device=device,
            progress=progress,
        )
    finally:
        shutil.rmtree(provisional, ignore_errors=True)
    metadata["pairs"] = selection.pairs
    metadata["metrics"] = selection.metrics
    metadata["training"] = {
        "stage": config["stage"],
        "commands": record.get("commands", []),
        "runs": record.get("runs", []),
        "export_command": command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "device": record.get("device", {}),
        "steps": int(checkpoint["step"]),
        "target_steps": int(config["train"]["steps"]),
        "data": dict(data),
        "train_cases": train_cases,
        "config": config,
    }
    return save_bundle(out, metadata, weights)
