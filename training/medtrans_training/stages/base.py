"""The Stage interface: what one trainable stage gives the generic :class:`~medtrans_training.trainer.Trainer`.

A *stage* is one training job of a model family, with its own config file and run folder:
``unet`` (the whole ``unet`` family in one stage), or ``aldm_autoencoder`` -> ``aldm_spade`` ->
``aldm_diffusion`` (three stages, each a run; later stages read earlier runs' weights).

Division of work
----------------
The **Trainer** owns everything that is not model specific: config, seeds, the data loader
(``DistributedSampler`` under ``torchrun``), moving modules to the device, DDP wrapping, bf16 autocast
on CUDA, EMA copies, checkpoints and resume, tqdm + ``metrics.jsonl`` logging, rank-0 saving.
The **Stage** owns the networks, the losses, the optimisers' settings and what goes into a bundle.

Lifecycle (all ranks)::

    stage = get_stage_class(cfg["stage"])(cfg, device)   # cfg = the whole resolved config dict
    modules = stage.build_modules()          # {name: nn.Module}: the *trained* networks (CPU is fine)
    stage.attach(modules, wrapped, ema)      # trainer moves to device, wraps in DDP, makes EMA copies
    optimisers = stage.configure_optimizers()
    for step in range(start, cfg["train"]["steps"]):
        with autocast:                        # bf16 on CUDA, nothing on CPU
            logs = stage.training_step(batch, step)   # calls self.optimise(name, loss) itself
        trainer updates EMA copies of ``stage.ema_modules``
        every val_every steps: stage.validation_step(val_batch) under torch.no_grad()
    export (rank 0, from a run folder): stage.bundle_weights() + stage.bundle_fields()

Batches
-------
Every dataset of this package yields dicts; collated batches hold:

* ``"source"``, ``"target"``: ``(B, 1, Z, Y, X)`` float32, normalised with MedTransCore's own
  ``modalities.normalise`` (CT: [-1024, 3000] HU -> [-1, 1]; MR: 0 -> -1, 99.5th body percentile -> 1),
  i.e. exactly what the inference pipeline hands a ``Translator``.
* ``"mask"``: ``(B, 1, Z, Y, X)`` float32 body mask (1 inside), from ``MedTransCore.preprocess.body_mask``.
* ``"source_modality"``, ``"target_modality"``: ``(B,)`` int64 indices into ``stage.modalities``
  (= ``cfg["data"]["modalities"]``, the order a bundle's ``modalities`` field keeps).
* ``"source_key"``, ``"target_key"``, ``"case"``: lists of B strings (registry keys, case id).

A stage that needs single images (an autoencoder) can use ``"target"`` (every modality appears as a target).

Config
------
A run's config (YAML or JSON) has the sections ``stage`` (registry name), ``seed``, ``data`` (see
``medtrans_training.data``), ``model`` (stage specific: read it in ``build_modules``), ``train``
(steps, batch_size, lr, ema_decay, grad_clip, log_every, val_every, save_every, ...) and ``export``
(name, version, description, licence, limitations). Optimiser overrides per module live in
``model.optim.<module name>`` (``lr``, ``betas``, ``weight_decay``), defaulting to ``train.lr``.

Registering a stage
-------------------
The stage named ``X`` lives in ``medtrans_training/stages/X.py`` and that module sets
``STAGE = TheStageClass``; :func:`get_stage_class` imports it by name (no central list to edit).
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

CHECKPOINT_NAME = "checkpoint.pt"


class Stage(ABC):
    """One trainable stage of a model family.

    Args:
        config: the whole resolved run config (``stage``, ``seed``, ``data``, ``model``, ``train``, ``export``).
        device: where the trainer runs the modules.
    """

    #: registry name, equal to the module name under ``medtrans_training/stages``.
    name: ClassVar[str] = ""
    #: bundle ``family`` this stage exports, or ``None`` for a stage that only feeds a later stage.
    family: ClassVar[str | None] = None
    #: names (keys of ``build_modules``) the trainer keeps an EMA copy of; exports use the EMA copy.
    ema_modules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        self.config = config
        self.model_config: dict[str, Any] = dict(config.get("model", {}))
        self.train_config: dict[str, Any] = dict(config.get("train", {}))
        self.modalities: list[str] = list(config["data"]["modalities"])
        self.device = torch.device(device)
        self.modules: dict[str, nn.Module] = {}
        self.wrapped: dict[str, nn.Module] = {}
        self.ema: dict[str, nn.Module] = {}
        self.optimisers: dict[str, torch.optim.Optimizer] = {}

    # ---- to implement ---------------------------------------------------------------------------
    @abstractmethod
    def build_modules(self) -> dict[str, nn.Module]:
        """Create the networks this stage trains (frozen helpers, e.g. a pretrained autoencoder, are
        kept by the stage itself and moved to ``self.device`` there).

        Returns:
            ``{name: module}``; the trainer checkpoints, DDP-wraps and (for ``ema_modules``) averages them.
        """

    @abstractmethod
    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        """One optimisation step on a batch already on ``self.device`` (see the module docstring).

        Compute losses with ``self.net(name)`` (the DDP-wrapped module: call each wrapped module at most
        once per backward) and update with ``self.optimise(name, loss)``.

        Returns:
            scalar logs, e.g. ``{"loss_l1": 0.12}`` (floats; the trainer averages and writes them).
        """

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        """Scalar metrics on a held-out batch (called under ``torch.no_grad()``; use ``self.eval_net``)."""
        return {}

    def bundle_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{"model.safetensors": state_dict, ...}`` for the bundle (EMA weights where kept)."""
        raise NotImplementedError(f"stage {self.name!r} does not export a bundle")

    def bundle_fields(self) -> dict[str, Any]:
        """Family-specific bundle metadata: at least ``network`` (exact keyword config the Translator
        rebuilds from) and ``sampler`` (dict or None); may add extra keys. Export fills the rest."""
        raise NotImplementedError(f"stage {self.name!r} does not export a bundle")

    # ---- provided ---------------------------------------------------------------------------------
    def attach(self, modules: dict[str, nn.Module], wrapped: dict[str, nn.Module], ema: dict[str, nn.Module]) -> None:
        """Called by the trainer: plain modules on the device, their training wrappers (DDP or the same
        module), and EMA copies (for ``ema_modules``)."""
        self.modules, self.wrapped, self.ema = modules, wrapped, ema

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One AdamW per module with trainable parameters; settings from ``model.optim.<name>`` or ``train``."""
        overrides = self.model_config.get("optim", {})
        for name, module in self.modules.items():
            params = [p for p in module.parameters() if p.requires_grad]
            if not params:
                continue
            opt = {**self.train_config, **overrides.get(name, {})}
            self.optimisers[name] = torch.optim.AdamW(
                params,
                lr=float(opt.get("lr", 1e-4)),
                betas=tuple(opt.get("betas", (0.9, 0.999))),
                weight_decay=float(opt.get("weight_decay", 0.0)),
            )
        return self.optimisers

    def net(self, name: str) -> nn.Module:
        """The module to call in ``training_step`` (DDP-wrapped under torchrun)."""
        return self.wrapped.get(name, self.modules[name])

    def unwrapped(self, name: str) -> nn.Module:
        """The plain module (e.g. a discriminator scored in the generator step without DDP hooks)."""
        return self.modules[name]

    def eval_net(self, name: str) -> nn.Module:
        """The EMA copy when kept, else the plain module: for validation and export."""
        return self.ema.get(name, self.modules[name])

    def optimise(self, name: str, loss: torch.Tensor) -> None:
        """Zero grads, back-propagate ``loss``, clip to ``train.grad_clip`` (if set), step optimiser ``name``."""
        optimiser = self.optimisers[name]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.train_config.get("grad_clip")
        if clip:
            torch.nn.utils.clip_grad_norm_(self.modules[name].parameters(), float(clip))
        optimiser.step()


def get_stage_class(name: str) -> type[Stage]:
    """Import ``medtrans_training.stages.<name>`` and return its ``STAGE`` class.

    Raises:
        ValueError: unknown or malformed stage name.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
        raise ValueError(f"stage name {name!r} must be a lower-case identifier such as 'unet'")
    try:
        module = importlib.import_module(f"medtrans_training.stages.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"medtrans_training.stages.{name}":
            raise
        known = sorted(p.stem for p in Path(__file__).parent.glob("*.py") if p.stem not in {"__init__", "base"})
        raise ValueError(f"unknown stage {name!r}; available: {', '.join(known)}") from None
    stage = getattr(module, "STAGE", None)
    if not (isinstance(stage, type) and issubclass(stage, Stage)):
        raise ValueError(f"medtrans_training.stages.{name} does not define STAGE = <Stage subclass>")
    return stage


def load_run_state(run_dir: str | Path, module: str, *, ema: bool = True) -> dict[str, torch.Tensor]:
    """A module's weights from another run's checkpoint (``weights_only=True``: never unpickles code).

    Args:
        run_dir: a run folder written by the trainer (holds ``checkpoint.pt``).
        module: a key of that stage's ``build_modules``.
        ema: prefer the EMA copy when the run kept one.

    Returns:
        the module's state dict (CPU tensors).
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {CHECKPOINT_NAME}; train that stage first")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if ema and module in checkpoint.get("ema", {}):
        return checkpoint["ema"][module]
    if module not in checkpoint["modules"]:
        raise KeyError(f"{path} has no module {module!r}; it has {', '.join(checkpoint['modules'])}")
    return checkpoint["modules"][module]
