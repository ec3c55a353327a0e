"""Run configuration: one YAML or JSON file per stage, defaults filled in, ``--set key.path=value`` overrides.

Sections (see ``stages/base.py`` for who reads what)::

    stage: unet                 # stage registry name
    seed: 0
    data: {...}                 # medtrans_training.data.build_datasets
    model: {...}                # stage specific
    train: {steps, batch_size, lr, lr_schedule, warmup_steps, ema_decay, grad_clip, log_every, val_every,
            val_batches, save_every, num_workers, amp, threads, stop_at}
    export: {name, version, description, licence, limitations}

Every key is checked (``config_schema``): a misspelled one is an error naming it, the allowed keys and the closest.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

from MedTransCore.errors import InputError

TRAIN_DEFAULTS: dict[str, Any] = {
    "steps": 1000,
    "batch_size": 2,
    "lr": 2e-4,
    "ema_decay": 0.999,
    "grad_clip": 1.0,
    "log_every": 10,
    "val_every": 200,
    "val_batches": 4,
    "save_every": 200,
    "num_workers": 0,
    "amp": True,  # bf16 autocast on CUDA; ignored on the CPU
    "lr_schedule": "constant",  # or "cosine" (with warmup_steps)
    "warmup_steps": 0,
    "threads": None,  # torch CPU threads (None: torch's default); 1 is fastest on a shared, busy CPU
    "stop_at": None,  # end at this step on the train.steps learning-rate curve (rebuilds a run stopped early)
}
SECTIONS = ("stage", "seed", "data", "model", "train", "export")


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in recursively (override wins)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """``"train.steps=10"`` -> ``{"train": {"steps": 10}}`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise InputError(f"override {text!r} must look like section.key=value")
    path, raw = text.split("=", 1)
    value: Any = yaml.safe_load(raw)
    for key in reversed(path.strip().split(".")):
        value = {key: value}
    return value


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a config file, apply overrides, fill defaults and check the sections.

    Raises:
        InputError: missing file, bad syntax, unknown section, or no ``stage``/``data.modalities``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config {path} does not exist")
    text = path.read_text()
    try:
        config = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"config {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(config, dict):
        raise InputError(f"config {path} must be a mapping of sections")
    for text in overrides:
        config = deep_merge(config, parse_override(text))
    return resolve_config(config, where=str(path))


def resolve_config(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Fill defaults and validate a config dict (already merged).

    Raises:
        InputError: unknown section or key (anywhere), missing ``stage`` or ``data.modalities``.
    """
    from .config_schema import check_keys, config_schema

    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise InputError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(SECTIONS)}")
    if not config.get("stage"):
        raise InputError(f"{where}: missing 'stage' (e.g. stage: unet)")
    if not isinstance(config.get("data"), dict) or not config["data"].get("modalities"):
        raise InputError(f"{where}: missing data.modalities (list of registry keys)")
    try:
        schema = config_schema(str(config["stage"]))
    except ValueError as exc:  # an unknown stage name
        raise InputError(f"{where}: {exc}") from exc
    try:
        check_keys(config, schema, "")
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    resolved = {"seed": 0, "model": {}, "export": {}, **config}
    resolved["train"] = deep_merge(TRAIN_DEFAULTS, config.get("train", {}))
    return resolved
