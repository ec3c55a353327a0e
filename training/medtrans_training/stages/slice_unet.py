"""The ``slice_unet`` stage: a 2.5D slice UNet that learns every sequence from any subset of the others.

Config::

    data:
      sampling: slices             # slice-stack items (data.slices); needs it
      context: 1                   # neighbouring slices on each side (the network's `context`)
      patch: [176, 176]            # in-plane crop (x, y)
    model:
      network: {channels: [24, 48, 96, 192, 384], strides: [2, 2, 2, 2], num_res_units: 1, norm: instance}
      loss: {body_weight: 10.0, ssim: 0.0}  # + ssim x (1 - 2D SSIM) of the wanted outputs
      init_run: null               # a slice_unet run whose (EMA) weights start this one (a fine-tuning stage)
      augment: {rotate: 0.2, scale: 0.12, intensity: 0.15, prob: 0.8}
      single_source_prob: 0.5      # share of items with one input sequence (the rest: 2 .. n-1 at random)

Each training item draws which of the case's sequences are inputs (random *sequence dropout*: one sequence half
the time, as a user with one scan asks, otherwise any larger subset), and every other sequence the case has is a
supervised output of the same pass. In-plane rotation, scaling and per-sequence intensity scaling are applied to
whole batches here (the same geometry for inputs, targets and mask). The loss is L1, with body (brain) voxels
weighted ``body_weight`` times the background, plus ``ssim`` times one minus the 2D SSIM (Gaussian window of 11,
sigma 1.5, as the brain-MR metric) of every wanted output slice: L1 alone favours blur, which SSIM penalises.
A recipe may fine-tune an earlier run (``init_run``, e.g. a stage of a pipeline) with another loss.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.losses import SSIMLoss
from torch import nn

from MedTransCore.errors import InputError
from MedTransCore.modalities import MR_SCHEMES
from MedTransCore.models.slice_unet import build_slice_unet

from ..data.dataset import BACKGROUND
from ..export import NORMALISATION
from .base import Stage, load_run_state
from .unet import weighted_l1

LOSS_DEFAULTS = {"body_weight": 10.0, "ssim": 0.0}
AUGMENT_DEFAULTS = {"rotate": 0.2, "scale": 0.12, "intensity": 0.15, "prob": 0.8}
SINGLE_SOURCE_PROB = 0.5


def _leaves(*names: str) -> dict[str, None]:
    return dict.fromkeys(names)


class SliceUNetStage(Stage):
    """Trains the slice generator (``generator``, EMA kept) with L1 on every sequence that is not an input."""

    name = "slice_unet"
    family = "slice_unet"
    ema_modules = ("generator",)
    #: the ``model`` section's keys (checked by ``config_schema``).
    model_schema: ClassVar[dict[str, Any]] = {
        "network": _leaves(
            *(set(inspect.signature(build_slice_unet).parameters) - {"input_modalities", "modalities", "context"})
        ),
        "loss": _leaves(*LOSS_DEFAULTS),
        "augment": _leaves(*AUGMENT_DEFAULTS),
        "single_source_prob": None,
        "init_run": None,
        "optim": None,
    }

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        if config["data"].get("sampling") != "slices":
            raise InputError("the slice_unet stage needs data.sampling: slices")
        if len(self.modalities) < 2:
            raise InputError("the slice_unet stage needs at least two data.modalities")
        given = {
            **self.model_config.get("network", {}),
            "input_modalities": list(self.modalities),
            "modalities": list(self.modalities),
            "context": int(config["data"].get("context", 1)),
        }
        defaults = {
            k: list(p.default) if isinstance(p.default, tuple) else p.default
            for k, p in inspect.signature(build_slice_unet).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        self.network_config = {**defaults, **given}
        self.loss_config = {**LOSS_DEFAULTS, **self.model_config.get("loss", {})}
        self.augment = {**AUGMENT_DEFAULTS, **self.model_config.get("augment", {})}
        self.single_source_prob = float(self.model_config.get("single_source_prob", SINGLE_SOURCE_PROB))
        # Training data are normalised to [-1, 1] (background -1): data range 2.
        self.ssim = SSIMLoss(spatial_dims=2, data_range=2.0, win_size=11, kernel_sigma=1.5)

    def build_modules(self) -> dict[str, nn.Module]:
        generator = build_slice_unet(**self.network_config)
        init_run = self.model_config.get("init_run")
        if init_run:
            try:
                generator.load_state_dict(load_run_state(init_run, "generator"))
            except (RuntimeError, KeyError) as exc:
                raise InputError(f"model.init_run {init_run} holds another network than model.network: {exc}") from exc
        return {"generator": generator}

    # ---- batch preparation -----------------------------------------------------------------------
    def _draw_inputs(self, available: torch.Tensor) -> torch.Tensor:
        """``(B, M)`` bool: a random non-empty subset of each item's sequences, leaving at least one as a target."""
        inputs = torch.zeros_like(available)
        for b, row in enumerate(available):
            present = torch.nonzero(row).flatten().tolist()
            if len(present) < 2:
                raise InputError("a slice_unet item needs at least two sequences (one in, one out)")
            if len(present) == 2 or float(torch.rand(())) < self.single_source_prob:
                count = 1
            else:
                count = int(torch.randint(2, len(present), ()))
            chosen = torch.randperm(len(present))[:count]
            inputs[b, [present[i] for i in chosen]] = True
        return inputs

    def _augment_geometry(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random in-plane rotation and scaling for every channel of an item (background outside)."""
        batch = images.shape[0]
        apply = (torch.rand(batch, device=images.device) < float(self.augment["prob"])).to(images.dtype)
        angle = (torch.rand(batch, device=images.device) * 2 - 1) * float(self.augment["rotate"]) * apply
        scale = 1 + (torch.rand(batch, device=images.device) * 2 - 1) * float(self.augment["scale"]) * apply
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        zero = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        shape = images.shape
        flat = images.flatten(1, 2) - BACKGROUND  # zero padding of grid_sample = background
        grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
        warped = F.grid_sample(flat, grid, mode="bilinear", align_corners=False) + BACKGROUND
        warped_mask = F.grid_sample(mask, grid, mode="nearest", align_corners=False)
        return warped.view(shape), warped_mask

    def _augment_intensity(self, images: torch.Tensor) -> torch.Tensor:
        """Scale each input sequence's intensities by ``U(1 - a, 1 + a)`` (MR has no absolute unit)."""
        factor = float(self.augment["intensity"])
        scale = 1 + (torch.rand(*images.shape[:2], 1, 1, 1, device=images.device) * 2 - 1) * factor
        return (images - BACKGROUND) * scale + BACKGROUND

    def prepare_batch(self, batch: dict[str, Any], *, augment: bool) -> tuple[torch.Tensor, ...]:
        """``(inputs (B, M, D, H, W), present (B, M), targets (B, M, H, W), wanted (B, M), mask (B, 1, H, W))``."""
        # Nothing below the background (a few outlier voxels of a scan): the translator clamps the same way.
        images = batch["images"].float().clamp(min=BACKGROUND)
        mask, available = batch["mask"].float(), batch["available"].bool()
        if augment:
            images, mask = self._augment_geometry(images, mask)
        present = self._draw_inputs(available) if augment else self._first_input(available)
        targets = images[:, :, images.shape[2] // 2]
        inputs = self._augment_intensity(images) if augment else images
        inputs = torch.where(present[:, :, None, None, None], inputs, torch.full_like(inputs, BACKGROUND))
        return inputs, present.float(), targets, available & ~present, mask

    @staticmethod
    def _first_input(available: torch.Tensor) -> torch.Tensor:
        """Validation: the first sequence each item has is the only input (a fixed, reproducible choice)."""
        first = available.float().argmax(1)
        return F.one_hot(first, available.shape[1]).bool()

    # ---- steps --------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        inputs, present, targets, wanted, mask = self.prepare_batch(batch, augment=True)
        predicted = self.net("generator")(inputs, present).float()
        l1 = weighted_l1(predicted, targets, mask, float(self.loss_config["body_weight"]), wanted)
        logs = {"loss_l1": float(l1.detach()), "inputs_per_item": float(present.sum(1).mean())}
        loss = l1
        if float(self.loss_config["ssim"]) > 0:
            # (N, 1, H, W): every wanted output slice of the batch.
            ssim = self.ssim(predicted[wanted].unsqueeze(1), targets[wanted].unsqueeze(1))
            loss = loss + float(self.loss_config["ssim"]) * ssim
            logs["loss_ssim"] = float(ssim.detach())
        self.optimise("generator", loss)
        return logs

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        inputs, present, targets, wanted, mask = self.prepare_batch(batch, augment=False)
        predicted = self.eval_net("generator")(inputs, present).float()
        body = (mask > 0).expand_as(predicted) & wanted[:, :, None, None]
        error = (predicted - targets).abs()
        return {
            "val_l1": float(weighted_l1(predicted, targets, mask, float(self.loss_config["body_weight"]), wanted)),
            "val_mae_body": float(error[body].mean()) if body.any() else math.nan,
        }

    # ---- export -------------------------------------------------------------------------------------
    def bundle_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"model.safetensors": self.eval_net("generator").state_dict()}

    def bundle_fields(self) -> dict[str, Any]:
        return {
            "network": dict(self.network_config),
            "sampler": None,
            "grid": None,  # whole volumes: the translator batches the slices itself
            "normalisation": {**NORMALISATION, "mr_scheme": self.config["data"].get("normalisation", MR_SCHEMES[0])},
            "orientation": "LPS",  # axial slices are the last array axis after DICOMOrient(..., "LPS")
            "output_mask": "source_nonzero",
        }


STAGE = SliceUNetStage
