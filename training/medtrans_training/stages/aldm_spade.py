"""The ``aldm_spade`` stage: MS-SPADE in the frozen autoencoder's latent space (ALDM stage 2).

Config (``model`` section)::

    model:
      autoencoder_run: runs/aldm_autoencoder        # a finished aldm_autoencoder run
      network: {channels: 32, num_spade_blocks: 2}   # MSSPADE keywords (build_spade)
      latent_cache: true                             # re-use latents of unchanged whole images (see LatentCache)

Loss: L1 between ``spade(E(source), target)`` and ``E(target)`` (the paper's target-like latents). The
latents are unscaled here; the diffusion stage applies the scale factor to both. No bundle of its own.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from MedTransCore.models.aldm.networks import build_spade, resolve_spade_config

from .aldm_autoencoder import LatentCache, load_autoencoder
from .base import Stage


class SPADEStage(Stage):
    """Trains ``spade`` against the latents of a frozen autoencoder."""

    name = "aldm_spade"
    family = None
    ema_modules = ("spade",)

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        if not self.model_config.get("autoencoder_run"):
            raise ValueError("aldm_spade needs model.autoencoder_run (a finished aldm_autoencoder run folder)")
        self.autoencoder, self.autoencoder_config = load_autoencoder(self.model_config["autoencoder_run"], self.device)
        self.network_config = resolve_spade_config(**self.model_config.get("network", {}))
        self.latents = LatentCache(self.autoencoder.encode, bool(self.model_config.get("latent_cache", True)))

    def build_modules(self) -> dict[str, nn.Module]:
        spade = build_spade(
            latent_channels=self.autoencoder.latent_channels, modalities=self.modalities, **self.network_config
        )
        return {"spade": spade}

    def encode_pair(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents ``(E(source), E(target))`` of a batch, each ``(B, C, z, y, x)``."""
        source = self.latents(batch["source"], batch["case"], batch["source_key"])
        target = self.latents(batch["target"], batch["case"], batch["target_key"])
        return source, target

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        source, target = self.encode_pair(batch)
        loss = F.l1_loss(self.net("spade")(source, batch["target_key"]).float(), target)
        self.optimise("spade", loss)
        return {"loss_l1": float(loss.detach())}

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        source, target = self.encode_pair(batch)
        like = self.eval_net("spade")(source, batch["target_key"]).float()
        return {"val_l1": float(F.l1_loss(like, target)), "val_l1_identity": float(F.l1_loss(source, target))}


STAGE = SPADEStage
