"""A training recipe: one stage config, or a pipeline of stage configs where later stages read earlier runs.

Multi-stage families (``aldm``: autoencoder -> MS-SPADE -> diffusion; ``vae_transformer``: autoencoder ->
transformer -> decoder) are cross-validated as a whole: every fold trains every stage on its own training subjects,
so no stage has seen the held-out subject. A pipeline file names the stages in order::

    pipeline:
      - {name: autoencoder, config: brain_mr_vae_autoencoder.yaml}
      - {name: transformer, config: brain_mr_vae_transformer.yaml, runs: {model.autoencoder_run: autoencoder}}
      - {name: decoder, config: brain_mr_vae_decoder.yaml, runs: {model.transformer_run: transformer}}

``config`` paths are relative to the pipeline file; ``runs`` sets a config key to the run folder of an earlier
stage of the same fold; ``set`` lists overrides of that stage's config, so two stages may share one file, e.g. a
fine-tuning stage ``{name: finetune, config: same.yaml, set: [train.steps=400], runs: {model.init_run: base}}``.
The last stage's run is the model (it exports the bundle). A command-line override (``--set``) applies to every
stage (``--set train.steps=2`` shortens them all), or, prefixed with a stage's name and a colon, to that stage only
(``--set transformer:model.network.depth=2``); it wins over a stage's own ``set``. A plain run config is a one-stage
recipe whose run folder is the fold folder itself.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from MedTransCore.errors import InputError

from .config import deep_merge, load_config, parse_override


@dataclass
class RecipeStage:
    """One stage of a recipe: its resolved config and the keys that name earlier stages' runs."""

    name: str
    config: dict[str, Any]
    runs: dict[str, str] = field(default_factory=dict)


@dataclass
class Recipe:
    """The stages of a recipe, in training order (the last one is the model)."""

    stages: list[RecipeStage]

    @property
    def final(self) -> dict[str, Any]:
        """The config of the stage that exports the bundle."""
        return self.stages[-1].config

    def run_dirs(self, folder: Path) -> dict[str, Path]:
        """Where each stage trains inside a fold's ``folder`` (a one-stage recipe trains in ``folder`` itself)."""
        if len(self.stages) == 1:
            return {self.stages[0].name: folder}
        return {stage.name: folder / stage.name for stage in self.stages}

    def fold_configs(
        self, folder: Path, adapt: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> list[tuple[dict[str, Any], Path]]:
        """``(config, run folder)`` per stage in order: ``adapt`` applied (e.g. the fold's split), runs linked."""
        dirs = self.run_dirs(folder)
        out = []
        for stage in self.stages:
            config = adapt(stage.config)
            for key, earlier in stage.runs.items():
                config = deep_merge(config, parse_override(f"{key}={dirs[earlier]}"))
            out.append((config, dirs[stage.name]))
        return out


def single_stage(config: dict[str, Any]) -> Recipe:
    """A one-stage recipe of a resolved run config."""
    return Recipe([RecipeStage(config.get("stage", "model"), copy.deepcopy(config))])


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A run config (one stage) or a pipeline file (several), with ``overrides`` applied to every stage.

    Raises:
        InputError: a malformed pipeline (missing keys, unknown or later stage named in ``runs``, duplicate names).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"config {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"config {path} is not valid YAML: {exc}") from exc
    if not (isinstance(raw, dict) and "pipeline" in raw):
        return single_stage(load_config(path, overrides))
    scoped, shared = _split_overrides(overrides)
    entries = raw["pipeline"]
    if set(raw) != {"pipeline"} or not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: a pipeline file holds only 'pipeline', a non-empty list of stages")
    stages: list[RecipeStage] = []
    for index, entry in enumerate(entries):
        where = f"{path}: pipeline[{index}]"
        if (
            not isinstance(entry, dict)
            or not {"name", "config"} <= set(entry)
            or set(entry) - {"name", "config", "runs", "set"}
        ):
            raise InputError(
                f"{where} must be {{name: ..., config: FILE, runs: {{key: earlier stage}}, set: [key=value, ...]}}"
            )
        runs = dict(entry.get("runs") or {})
        own = entry.get("set") or []
        if not isinstance(own, list) or not all(isinstance(item, str) for item in own):
            raise InputError(f"{where}: set must be a list of key=value strings")
        known = {s.name for s in stages}
        if entry["name"] in known:
            raise InputError(f"{where}: the stage name {entry['name']!r} is used twice")
        for key, earlier in runs.items():
            if earlier not in known:
                raise InputError(f"{where}: runs.{key} names {earlier!r}, not an earlier stage ({sorted(known)})")
        # The command line's overrides come last: they win over the pipeline's own.
        config = load_config(path.parent / entry["config"], [*own, *shared, *scoped.pop(entry["name"], [])])
        stages.append(RecipeStage(str(entry["name"]), config, runs))
    if scoped:
        raise InputError(f"--set names unknown stage(s) {sorted(scoped)}; {path} has {[s.name for s in stages]}")
    return Recipe(stages)


def _split_overrides(overrides: list[str] | tuple[str, ...]) -> tuple[dict[str, list[str]], list[str]]:
    """``({stage: [override, ...]}, [override for every stage])`` from ``stage:key=value`` and ``key=value``."""
    scoped: dict[str, list[str]] = {}
    shared = []
    for text in overrides:
        head = text.split("=", 1)[0]
        if ":" in head:
            stage, rest = text.split(":", 1)
            scoped.setdefault(stage.strip(), []).append(rest)
        else:
            shared.append(text)
    return scoped, shared
