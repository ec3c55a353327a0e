"""The ``vid2vid`` stage: CBCT -> CT as video-to-video translation over axial slices (seed 001).

Config::

    data:
      sampling: slices             # slice-stack items (data.slices): a stack of 2 * context + 1 slices is a clip
      context: 4                   # 9 consecutive slices per item
      pairs: [[CBCT, CT]]          # exactly one pair: the source and the target of the clip
      patch: [96, 96]
    model:
      network: {context: 2, previous: 2, features: [16, 16, 32, 64, 128, 16], norm: instance, upsample: nontrainable}
      loss: {body_weight: 4.0, temporal: 1.0, gan: 0.0, temporal_gan: 0.0}
      discriminator: {channels: 16, num_layers_d: 3}
      optim: {discriminator: {betas: [0.5, 0.999]}, temporal_discriminator: {betas: [0.5, 0.999]}}

An item's ``2 * data.context + 1`` slices are a clip: the generator
(:class:`~MedTransCore.models.vid2vid_network.Vid2VidGenerator`) translates its middle
``N = 2 * (data.context - network.context) + 1`` slices in order, each from its source neighbours and the slices
it generated before it, starting from "no previous" as inference starts a volume; gradients flow back through the
fed-back slices. Losses, each weighted by the body mask of its slice (``body_weight``):

* L1 between generated and true slices;
* ``temporal``: L1 between successive differences, ``(y_t - y_{t-1})`` against ``(gt_t - gt_{t-1})`` (no
  flicker between slices, the true anatomy's changes kept);
* ``gan`` > 0: LSGAN with an image ``discriminator`` (2D patch GAN on (source slice, slice) pairs);
* ``temporal_gan`` > 0: LSGAN with a ``temporal_discriminator`` (2D patch GAN on a whole clip of sources and
  slices stacked as ``2 N`` channels: it sees the slice-to-slice dynamics).

With both GAN weights at 0 (the default) no discriminator is built and a step is one generator pass.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from monai.networks.nets import PatchDiscriminator
from torch import nn

from MedTransCore.errors import InputError
from MedTransCore.modalities import CT_WINDOW_HU
from MedTransCore.models.vid2vid_network import build_vid2vid

from ..data.dataset import BACKGROUND, resolve_pairs
from .base import Stage
from .unet import weighted_l1

LOSS_DEFAULTS = {"body_weight": 4.0, "temporal": 1.0, "gan": 0.0, "temporal_gan": 0.0}
DISCRIMINATOR_DEFAULTS = {"channels": 16, "num_layers_d": 3}
#: Normalised CT units -> HU (for the logs).
HU_PER_UNIT = (CT_WINDOW_HU[1] - CT_WINDOW_HU[0]) / 2


def _leaves(*names: str) -> dict[str, None]:
    return dict.fromkeys(names)


def _lsgan(scores: torch.Tensor, real: bool) -> torch.Tensor:
    return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


class Vid2VidStage(Stage):
    """Trains the autoregressive slice generator (``generator``, EMA kept) and its optional discriminators."""

    name = "vid2vid"
    family = "vid2vid"
    ema_modules = ("generator",)
    #: the ``model`` section's keys (checked by ``config_schema``).
    model_schema: ClassVar[dict[str, Any]] = {
        "network": _leaves(*inspect.signature(build_vid2vid).parameters),
        "loss": _leaves(*LOSS_DEFAULTS),
        "discriminator": _leaves(*DISCRIMINATOR_DEFAULTS),
        "optim": None,
    }

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        data = config["data"]
        if data.get("sampling") != "slices":
            raise InputError("the vid2vid stage needs data.sampling: slices (a slice stack is a clip)")
        pairs = resolve_pairs(self.modalities, data.get("pairs", "all"))
        if len(pairs) != 1:
            raise InputError(f"the vid2vid stage translates one pair (data.pairs: [[CBCT, CT]]), got {pairs}")
        self.source_index, self.target_index = (self.modalities.index(key) for key in pairs[0])
        defaults = {
            k: list(p.default) if isinstance(p.default, tuple) else p.default
            for k, p in inspect.signature(build_vid2vid).parameters.items()
        }
        # Every keyword with its value, so a bundle never depends on today's defaults.
        self.network_config = {**defaults, **self.model_config.get("network", {})}
        build_vid2vid(**self.network_config)  # a bad network config fails here, before any data is loaded
        self.context = int(self.network_config["context"])
        self.depth = 2 * int(data.get("context", 1)) + 1
        self.frames = self.depth - 2 * self.context
        if self.frames < 2:
            raise InputError(
                f"data.context ({data.get('context', 1)}) must exceed model.network.context ({self.context}): "
                "a clip needs at least two translated slices"
            )
        self.loss_config = {**LOSS_DEFAULTS, **self.model_config.get("loss", {})}
        self.disc_config = {**DISCRIMINATOR_DEFAULTS, **self.model_config.get("discriminator", {})}

    def _weight(self, key: str) -> float:
        return float(self.loss_config[key])

    def _discriminator(self, in_channels: int) -> nn.Module:
        return PatchDiscriminator(
            spatial_dims=2,
            channels=int(self.disc_config["channels"]),
            in_channels=in_channels,
            num_layers_d=int(self.disc_config["num_layers_d"]),
            norm="INSTANCE",
        )

    def build_modules(self) -> dict[str, nn.Module]:
        modules: dict[str, nn.Module] = {"generator": build_vid2vid(**self.network_config)}
        if self._weight("gan") > 0:
            modules["discriminator"] = self._discriminator(2)  # (source slice, slice)
        if self._weight("temporal_gan") > 0:
            modules["temporal_discriminator"] = self._discriminator(2 * self.frames)  # (source clip, clip)
        return modules

    # ---- batch preparation -----------------------------------------------------------------------
    def prepare_batch(self, batch: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """``(source clip (B, D, H, W), source frames (B, N, H, W), target frames (B, N, H, W), masks (B, N, H, W))``."""
        images = batch["images"].float().clamp(min=BACKGROUND)  # as the translator clamps
        if images.shape[2] != self.depth:
            raise InputError(f"slice stacks of {images.shape[2]} slices, expected {self.depth} (data.context)")
        frames = slice(self.context, self.depth - self.context)
        source = images[:, self.source_index]
        target = images[:, self.target_index, frames]
        masks = batch["masks"].float()[:, frames]
        return source, source[:, frames], target, masks

    def _losses(self, fake: torch.Tensor, target: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        body_weight = self._weight("body_weight")
        l1 = weighted_l1(fake, target, masks, body_weight)
        # Successive differences; a difference counts as body where either slice is.
        either = torch.maximum(masks[:, 1:], masks[:, :-1])
        temporal = weighted_l1(fake[:, 1:] - fake[:, :-1], target[:, 1:] - target[:, :-1], either, body_weight)
        return {"l1": l1, "temporal": temporal}

    @staticmethod
    def _pairs(sources: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """``(B, N, H, W)`` twice -> ``(B * N, 2, H, W)`` image-discriminator inputs."""
        return torch.stack([sources, slices], 2).flatten(0, 1)

    # ---- steps --------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        clip, sources, target, masks = self.prepare_batch(batch)
        fake = self.net("generator")(clip).float()
        losses = self._losses(fake, target, masks)
        loss = losses["l1"] + self._weight("temporal") * losses["temporal"]
        logs = {"loss_l1": float(losses["l1"].detach()), "loss_temporal": float(losses["temporal"].detach())}
        # Generator step: the plain discriminators (no DDP hooks, frozen) score the fake.
        critics = {
            "discriminator": (self._weight("gan"), lambda s, y: self._pairs(s, y)),
            "temporal_discriminator": (self._weight("temporal_gan"), lambda s, y: torch.cat([s, y], 1)),
        }
        critics = {name: c for name, c in critics.items() if name in self.modules}
        for name, (weight, inputs) in critics.items():
            disc = self.unwrapped(name).requires_grad_(False)
            adv = _lsgan(disc(inputs(sources, fake))[-1].float(), real=True)
            disc.requires_grad_(True)
            loss = loss + weight * adv
            logs[f"loss_adv_{name}"] = float(adv.detach())
        self.optimise("generator", loss)
        # Discriminator steps: real and fake in one forward each (one DDP forward per backward).
        for name, (_, inputs) in critics.items():
            both = torch.cat([inputs(sources, target), inputs(sources, fake.detach())])
            real, fake_scores = self.net(name)(both)[-1].float().chunk(2)
            loss_d = 0.5 * (_lsgan(real, real=True) + _lsgan(fake_scores, real=False))
            self.optimise(name, loss_d)
            logs[f"loss_d_{name}"] = float(loss_d.detach())
        return logs

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        clip, _, target, masks = self.prepare_batch(batch)
        fake = self.eval_net("generator")(clip).float()
        losses = self._losses(fake, target, masks)
        body = masks > 0
        error = (fake - target).abs()
        mae = float(error[body].mean()) if body.any() else float(error.mean())
        return {
            "val_l1": float(losses["l1"]),
            "val_temporal": float(losses["temporal"]),
            "val_mae_body_hu": mae * HU_PER_UNIT,
        }

    # ---- export -------------------------------------------------------------------------------------
    def bundle_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"model.safetensors": self.eval_net("generator").state_dict()}

    def bundle_fields(self) -> dict[str, Any]:
        return {
            "network": dict(self.network_config),
            "sampler": None,
            "grid": None,  # whole volumes: the translator walks the z axis as one sequence
            "orientation": "LPS",  # axial slices are the last array axis after DICOMOrient(..., "LPS")
        }


STAGE = Vid2VidStage
