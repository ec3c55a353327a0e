"""The ``unet`` stage: direct 3D regression (L1), optionally with a pix2pix 3D patch GAN.

Config (``model`` section)::

    model:
      network: {architecture: unet, channels: [16, 32, 64, 128], strides: [2, 2, 2], num_res_units: 1,
                per_target_outputs: false}   # true: one output per modality, needs data.all_targets: true
      zero_init_output: false                     # true: the last conv starts at 0 (residual = identity)
      loss: {body_weight: 4.0, gan: 0.0}          # gan > 0 adds an LSGAN patch discriminator
      discriminator: {channels: 16, num_layers_d: 3}
      optim: {generator: {lr: 2e-4}, discriminator: {lr: 2e-4, betas: [0.5, 0.999]}}

With ``data.standardise: histogram-matching`` (a ``histogram_matching`` bundle) the network learns to refine the
histogram-matched source; the bundle gets ``input_standardisation`` and a copy of the reference quantiles.

``num_modalities`` of the network comes from ``data.modalities``. The generator is
``MedTransCore.models.unet.build_unet_network``, so a bundle rebuilds exactly what was trained.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import nn

from MedTransCore.errors import InputError
from MedTransCore.models.unet import STANDARDISATION_FILE, build_unet_network

from ..data import standardisation_reference
from .base import Stage

LOSS_DEFAULTS = {"body_weight": 4.0, "gan": 0.0}


def weighted_l1(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    body_weight: float,
    channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean absolute error with voxels inside the body weighted ``body_weight`` times.

    Args:
        prediction: ``(B, C, *spatial)`` (3D volumes or 2D slices).
        target: ``(B, C, *spatial)``.
        mask: ``(B, 1, *spatial)`` body mask.
        body_weight: weight of body voxels relative to background voxels.
        channels: optional ``(B, C)`` bool: which channels count (others get weight 0).
    """
    weight = (1.0 + (body_weight - 1.0) * mask).expand_as(prediction)
    if channels is not None:
        weight = weight * channels.to(weight.dtype).view(*channels.shape, *([1] * (prediction.ndim - 2)))
    return ((prediction - target).abs() * weight).sum() / weight.sum().clamp_min(1e-8)


class UNetStage(Stage):
    """Trains the conditioned generator (``generator``) and, with ``loss.gan > 0``, a ``discriminator``."""

    name = "unet"
    family = "unet"
    ema_modules = ("generator",)

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        if self.model_config.get("network", {}).get("per_target_outputs") and not config["data"].get("all_targets"):
            raise InputError(
                "model.network.per_target_outputs needs data.all_targets: true (every target is supervised)"
            )
        self.loss_config = {**LOSS_DEFAULTS, **self.model_config.get("loss", {})}
        # Every keyword with its value (defaults included), so a bundle never depends on today's defaults.
        given = {**self.model_config.get("network", {}), "num_modalities": len(self.modalities)}
        defaults = {
            k: list(p.default) if isinstance(p.default, tuple) else p.default
            for k, p in inspect.signature(build_unet_network).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        self.network_config = {**defaults, **given}

    @property
    def uses_gan(self) -> bool:
        return float(self.loss_config["gan"]) > 0

    def build_modules(self) -> dict[str, nn.Module]:
        generator = build_unet_network(**self.network_config)
        if self.model_config.get("zero_init_output", False):
            # A residual generator then starts as the identity map (near-identity pairs start near perfect).
            output = [m for m in generator.modules() if isinstance(m, nn.Conv3d)][-1]
            nn.init.zeros_(output.weight)
            nn.init.zeros_(output.bias)
        modules: dict[str, nn.Module] = {"generator": generator}
        if self.uses_gan:
            disc = {"channels": 16, "num_layers_d": 3, **self.model_config.get("discriminator", {})}
            modules["discriminator"] = PatchDiscriminator(
                spatial_dims=3,
                channels=int(disc["channels"]),
                in_channels=2 + len(self.modalities),  # source, candidate target, target one-hot
                num_layers_d=int(disc["num_layers_d"]),
                norm="INSTANCE",
            )
        return modules

    def _disc_input(self, source: torch.Tensor, candidate: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(target_index.long(), len(self.modalities)).to(source.dtype)
        return torch.cat([source, candidate, onehot[:, :, None, None, None].expand(-1, -1, *source.shape[2:])], 1)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        source, target, mask = batch["source"], batch["target"], batch["mask"]
        body_weight = float(self.loss_config["body_weight"])
        if self.network_config["per_target_outputs"]:
            # One pass predicts every modality: supervise all the case has, except the source itself.
            every = self.net("generator").forward_all(source, batch["source_modality"]).float()
            wanted = batch["available"].clone()
            wanted[torch.arange(len(wanted)), batch["source_modality"]] = False
            l1 = weighted_l1(every, batch["targets"], mask, body_weight, wanted)
            index = batch["target_modality"].view(-1, 1, 1, 1, 1).expand(-1, 1, *every.shape[2:])
            fake = every.gather(1, index)
        else:
            fake = self.net("generator")(source, batch["source_modality"], batch["target_modality"]).float()
            l1 = weighted_l1(fake, target, mask, body_weight)
        logs = {"loss_l1": float(l1.detach())}
        if not self.uses_gan:
            self.optimise("generator", l1)
            return logs

        # Generator step: the plain discriminator (no DDP hooks, frozen) scores the fake.
        disc = self.unwrapped("discriminator").requires_grad_(False)
        score = disc(self._disc_input(source, fake, batch["target_modality"]))[-1].float()
        adv = F.mse_loss(score, torch.ones_like(score))
        disc.requires_grad_(True)
        self.optimise("generator", l1 + float(self.loss_config["gan"]) * adv)

        # Discriminator step: one forward of real and fake together (one DDP forward per backward).
        pairs = torch.cat(
            [
                self._disc_input(source, target, batch["target_modality"]),
                self._disc_input(source, fake.detach(), batch["target_modality"]),
            ]
        )
        scores = self.net("discriminator")(pairs)[-1].float()
        real, fake_scores = scores.chunk(2)
        loss_d = 0.5 * (
            F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake_scores, torch.zeros_like(fake_scores))
        )
        self.optimise("discriminator", loss_d)
        return {**logs, "loss_adv": float(adv.detach()), "loss_d": float(loss_d.detach())}

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        fake = self.eval_net("generator")(batch["source"], batch["source_modality"], batch["target_modality"]).float()
        body = batch["mask"] > 0
        error = (fake - batch["target"]).abs()
        return {
            "val_l1": float(weighted_l1(fake, batch["target"], batch["mask"], float(self.loss_config["body_weight"]))),
            "val_mae_body": float(error[body].mean()) if body.any() else float(error.mean()),
        }

    def bundle_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        weights = {"model.safetensors": self.eval_net("generator").state_dict()}
        reference = standardisation_reference(self.config["data"])
        if reference is not None:  # the bundle carries its own copy: it must not depend on another bundle
            weights[STANDARDISATION_FILE] = {key: torch.from_numpy(value) for key, value in reference.items()}
        return weights

    def bundle_fields(self) -> dict[str, Any]:
        standardised = self.config["data"].get("standardise")
        return {
            "network": dict(self.network_config),
            "sampler": None,
            "input_standardisation": "histogram_matching" if standardised else None,
        }


STAGE = UNetStage
