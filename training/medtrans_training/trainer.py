"""The generic training loop every stage runs in (see ``stages/base.py`` for the division of work).

A run folder holds ``config.json`` (the resolved config), ``run.json`` (every command, and per run the step it
started from, the step it was asked to reach, the step its last checkpoint reached and whether it finished, was
stopped at ``train.stop_at`` or was interrupted; device, world size),
``metrics.jsonl`` (one JSON object per log line: ``{"split": "train"|"val", "step", "time_s", ...losses}``)
and ``checkpoint.pt`` (modules, EMA copies, optimisers, step; read back with ``weights_only=True``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.utils import worker_init_fn
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler
from tqdm import tqdm

from MedTransCore.errors import InputError

from .data import build_datasets
from .distributed import (
    DistInfo,
    describe_device,
    init_distributed,
    mean_over_ranks,
    resolve_training_device,
    shutdown_distributed,
    wait_for_all_ranks,
)
from .stages.base import CHECKPOINT_NAME, Stage, get_stage_class

CONFIG_NAME, RUN_NAME, METRICS_NAME = "config.json", "run.json", "metrics.jsonl"


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, decay: float, step: int) -> None:
    """``ema = d * ema + (1 - d) * module`` with a warm-up ``d = min(decay, (1 + step) / (10 + step))``."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for e, p in zip(ema.parameters(), module.parameters()):
        e.lerp_(p.detach(), 1.0 - d)
    for e, b in zip(ema.buffers(), module.buffers()):
        e.copy_(b)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _loop(loader: DataLoader, sampler: Any, start_epoch: int = 0):
    """Endless batches, re-shuffling every epoch (``set_epoch`` for the DistributedSampler)."""
    epoch = start_epoch
    while True:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


class Trainer:
    """Trains one stage into a run folder.

    Args:
        config: resolved config (``medtrans_training.config.load_config``).
        run_dir: the run folder (created; must not hold a checkpoint unless ``resume``).
        resume: continue from ``run_dir/checkpoint.pt`` (weights, EMA, optimisers, step).
        device: ``auto``, ``cpu`` or ``cuda``.
        command: the command line that started the run (recorded; default: ``sys.argv``).
    """

    def __init__(
        self,
        config: dict[str, Any],
        run_dir: str | Path,
        *,
        resume: bool = False,
        device: str = "auto",
        command: str | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.command = command or shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        if resume and not self.checkpoint_path.is_file():
            raise InputError(f"nothing to resume: {self.checkpoint_path} does not exist")
        if not resume and self.checkpoint_path.is_file():
            raise InputError(f"{self.run_dir} already holds a trained run; pass --resume or choose a new --run-dir")
        self.stage_class = get_stage_class(config["stage"])
        self.requested_device = device

    # ---- setup ---------------------------------------------------------------------------------
    def _setup(self) -> None:
        kind = "cuda" if self.requested_device != "cpu" and torch.cuda.is_available() else "cpu"
        self.dist: DistInfo = init_distributed(kind)
        self.device = resolve_training_device(self.requested_device, self.dist)
        seed = int(self.config["seed"])
        if self.config["train"].get("threads"):
            torch.set_num_threads(int(self.config["train"]["threads"]))
        torch.manual_seed(seed + self.dist.rank)
        np.random.seed(seed + self.dist.rank)
        self.train_cfg = self.config["train"]
        self.amp = bool(self.train_cfg["amp"]) and self.device.type == "cuda"

        self.stage: Stage = self.stage_class(self.config, self.device)
        modules = {name: m.to(self.device) for name, m in self.stage.build_modules().items()}
        ema = {
            name: copy.deepcopy(modules[name]).eval().requires_grad_(False)
            for name in self.stage.ema_modules
            if name in modules
        }
        wrapped = {}
        for name, module in modules.items():
            if self.dist.enabled and any(p.requires_grad for p in module.parameters()):
                ids = [self.device.index] if self.device.type == "cuda" else None
                wrapped[name] = DistributedDataParallel(module, device_ids=ids)
        self.stage.attach(modules, wrapped, ema)
        self.optimisers = self.stage.configure_optimizers()
        for optimiser in self.optimisers.values():
            for group in optimiser.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.start_step = 0
        if self.resume:
            self._load_checkpoint()

        # Data transforms get a different stream per rank and per resume point.
        data_seed = seed + 1000 * self.dist.rank + self.start_step
        self.train_set, self.val_set = build_datasets(self.config["data"], seed=data_seed)
        batch = int(self.train_cfg["batch_size"])
        if self.dist.enabled:
            sampler = DistributedSampler(self.train_set, self.dist.world_size, self.dist.rank, shuffle=True, seed=seed)
        else:
            sampler = RandomSampler(self.train_set, generator=torch.Generator().manual_seed(data_seed))
        self.sampler = sampler
        workers = int(self.train_cfg["num_workers"])
        # MONAI's worker_init_fn reseeds the dataset's random transforms in each worker: without it every worker
        # starts from the same random state and draws the same slices and crops.
        self.loader = DataLoader(
            self.train_set,
            batch_size=batch,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            worker_init_fn=worker_init_fn,
        )
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG_NAME).write_text(json.dumps(self.config, indent=2) + "\n")
            record = self._read_json(RUN_NAME) if self.resume else {"commands": []}
            record["commands"].append(self.command)
            record.setdefault("runs", []).append(
                {
                    "command": self.command,
                    "start_step": self.start_step,
                    "target_steps": int(self.train_cfg["steps"]),
                    "stop_at": self.train_cfg.get("stop_at"),
                    "step_reached": self.start_step,
                    "status": "running",
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                }
            )
            record["device"] = describe_device(self.device, self.dist)
            record["stage"] = self.stage.name
            self.record = record
            self._write_record()

    def _read_json(self, name: str) -> dict:
        path = self.run_dir / name
        return json.loads(path.read_text()) if path.is_file() else {"commands": []}

    def _write_record(self, **update: Any) -> None:
        """Update this run's entry of ``run.json`` (rank 0; written before the first step and at every checkpoint,
        so a killed run still says which step its checkpoint holds)."""
        if not self.dist.is_main or not hasattr(self, "record"):
            return
        self.record["runs"][-1].update(update)
        tmp = self.run_dir / f"{RUN_NAME}.tmp"
        tmp.write_text(json.dumps(self.record, indent=2) + "\n")
        os.replace(tmp, self.run_dir / RUN_NAME)

    # ---- checkpoints ---------------------------------------------------------------------------
    def _load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        for name, module in self.stage.modules.items():
            module.load_state_dict(state["modules"][name])
        for name, module in self.stage.ema.items():
            module.load_state_dict(state["ema"][name])
        for name, optimiser in self.optimisers.items():
            optimiser.load_state_dict(state["optimisers"][name])
        self.start_step = int(state["step"])

    def _save_checkpoint(self, step: int) -> None:
        if not self.dist.is_main:
            return
        state = {
            "stage": self.stage.name,
            "step": step,
            "modules": {n: m.state_dict() for n, m in self.stage.modules.items()},
            "ema": {n: m.state_dict() for n, m in self.stage.ema.items()},
            "optimisers": {n: o.state_dict() for n, o in self.optimisers.items()},
        }
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.checkpoint_path)
        self._write_record(step_reached=step)

    # ---- logging -------------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(self.run_dir / METRICS_NAME, "a") as f:
                f.write(json.dumps(record) + "\n")

    def _set_learning_rate(self, step: int, total: int) -> None:
        """``train.lr_schedule``: ``constant``, or ``cosine`` (linear warm-up over ``warmup_steps``, then cosine
        decay to 10 %); a pure function of the step, so a resumed run continues the same curve."""
        schedule = self.train_cfg.get("lr_schedule", "constant")
        if schedule == "constant":
            return
        if schedule != "cosine":
            raise InputError(f"train.lr_schedule must be constant or cosine, got {schedule!r}")
        warmup = int(self.train_cfg.get("warmup_steps", 0))
        if step < warmup:
            factor = (step + 1) / warmup
        else:
            progress = (step - warmup) / max(total - warmup, 1)
            factor = 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        for optimiser in self.optimisers.values():
            for group in optimiser.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _autocast(self):
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def validate(self, step: int) -> dict[str, float]:
        """Mean of ``stage.validation_step`` over ``train.val_batches`` fixed held-out batches."""
        if self.val_set is None:
            return {}
        self.val_set.reseed(int(self.config["seed"]) + 1)
        loader = DataLoader(self.val_set, batch_size=int(self.train_cfg["batch_size"]), shuffle=False)
        sums: dict[str, float] = defaultdict(float)
        count = 0
        with torch.no_grad(), self._autocast():
            for index, batch in enumerate(loader):
                if index >= int(self.train_cfg["val_batches"]):
                    break
                for key, value in self.stage.validation_step(_to_device(batch, self.device)).items():
                    sums[key] += float(value)
                count += 1
        means = mean_over_ranks({k: v / max(count, 1) for k, v in sums.items()}, self.dist)
        if means:
            self._log({"split": "val", "step": step, **means})
        return means

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self) -> dict[str, float]:
        """Train to ``train.steps`` (or ``train.stop_at``); returns the last logged training means.

        ``run.json`` records how the run ended: ``finished``, ``stopped`` (at ``train.stop_at``) or ``interrupted``
        (an exception, Ctrl-C or SIGTERM; ``step_reached`` is then the last checkpoint's step).
        """
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_interrupted)
        try:
            self._setup()
            logs = self._fit()
            stop_at = self.train_cfg.get("stop_at")
            stopped = stop_at is not None and int(stop_at) < int(self.train_cfg["steps"])
            self._write_record(status="stopped" if stopped else "finished", ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            wait_for_all_ranks()
            return logs
        except BaseException as exc:
            self._write_record(
                status="interrupted", reason=type(exc).__name__, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z")
            )
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            shutdown_distributed()

    def _fit(self) -> dict[str, float]:
        cfg = self.train_cfg
        total, log_every = int(cfg["steps"]), int(cfg["log_every"])
        # stop_at ends the run early on the same learning-rate curve (how a run interrupted at a step is rebuilt).
        end = total if cfg.get("stop_at") is None else min(total, int(cfg["stop_at"]))
        batches = _loop(self.loader, self.sampler, start_epoch=self.start_step)
        bar = tqdm(
            total=total,
            initial=self.start_step,
            disable=not self.dist.is_main,
            desc=self.stage.name,
            dynamic_ncols=True,
        )
        sums: dict[str, float] = defaultdict(float)
        count, last, started = 0, {}, time.perf_counter()
        for module in self.stage.modules.values():
            module.train()
        for step in range(self.start_step, end):
            self._set_learning_rate(step, total)
            batch = _to_device(next(batches), self.device)
            with self._autocast():
                logs = self.stage.training_step(batch, step)
            for name, ema in self.stage.ema.items():
                update_ema(ema, self.stage.modules[name], float(cfg["ema_decay"]), step)
            for key, value in logs.items():
                sums[key] += float(value)
            count += 1
            done = step + 1
            bar.update(1)
            if done % log_every == 0 or done == end:
                last = mean_over_ranks({k: v / count for k, v in sums.items()}, self.dist)
                elapsed = time.perf_counter() - started
                lr = next(iter(self.optimisers.values())).param_groups[0]["lr"] if self.optimisers else 0.0
                self._log({"split": "train", "step": done, "time_s": round(elapsed, 2), "lr": lr, **last})
                bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()})
                sums, count = defaultdict(float), 0
            if done % int(cfg["val_every"]) == 0 or done == end:
                for module in self.stage.modules.values():
                    module.eval()
                self.validate(done)
                for module in self.stage.modules.values():
                    module.train()
            if done % int(cfg["save_every"]) == 0 or done == end:
                self._save_checkpoint(done)
        bar.close()
        if self.start_step >= end:  # nothing left to train: the checkpoint keeps its true step
            self._save_checkpoint(self.start_step)
        return last


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM during training (recorded as ``interrupted`` like Ctrl-C)."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise TrainingInterrupted(f"signal {signum}")
