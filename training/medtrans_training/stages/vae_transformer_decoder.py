"""The ``vae_transformer_decoder`` stage: seed 000's stage 3; exports the final ``vae_transformer`` bundle.

The decoder is fine-tuned on the latents the transformer *predicts*, against the real target image, with the
encoder and the transformer frozen: predicted latents are smoother than encoded ones, and a decoder trained only on
encoded latents renders them blurred. The requests are drawn exactly as in ``vae_transformer`` (random target,
random non-empty source subset).

Config::

    data: {all_targets: true, patch: [64, 64, 64], augment: false}    # as the vae_transformer run
    model:
      transformer_run: runs/vae-transformer            # a finished vae_transformer run (names its autoencoder run)
      loss: {body_weight: 4.0, ssim: 0.0}              # body-weighted L1 (+ 3D SSIM, ~30 % of a CPU step)
      single_source_prob: 0.5
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
from monai.losses import SSIMLoss
from torch import nn

from ..config_schema import _leaves
from .aldm_autoencoder import run_config, run_summary
from .base import Stage, load_run_state
from .unet import weighted_l1
from .vae_transformer import VAETransformerStage, draw_requests

LOSS_DEFAULTS = {"body_weight": 4.0, "ssim": 0.0}


class DecoderOnly(nn.Module):
    """The autoencoder's decoding path as a module (``forward`` = ``decode``: DDP hooks see the call).

    Args:
        autoencoder: a :class:`~MedTransCore.models.aldm.networks.LatentAutoencoder`; its encoder is frozen here.
    """

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        encoding = ("encoder", "quant_conv_mu", "quant_conv_log_sigma")
        for name, parameter in autoencoder.net.named_parameters():
            parameter.requires_grad_(not name.startswith(encoding))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """``(B, C, z, y, x)`` unscaled latent -> ``(B, 1, Z, Y, X)`` image."""
        return self.autoencoder.decode(latent)


class DecoderStage(VAETransformerStage):
    """Fine-tunes ``decoder`` (a copy of the stage-1 autoencoder, decoding path only) on predicted latents."""

    name = "vae_transformer_decoder"
    ema_modules = ("decoder",)
    model_schema: ClassVar[dict[str, Any]] = {
        **_leaves("transformer_run", "single_source_prob", "latent_cache"),
        "loss": _leaves(*LOSS_DEFAULTS),
        "optim": None,
    }

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        Stage.__init__(self, config, device)
        run = self.model_config.get("transformer_run")
        if not run:
            raise ValueError("vae_transformer_decoder needs model.transformer_run (a finished vae_transformer run)")
        stage_two = run_config(run)
        if stage_two.get("stage") != VAETransformerStage.name:
            raise ValueError(f"{run} is a {stage_two.get('stage')!r} run, not a {VAETransformerStage.name!r} run")
        if list(stage_two["data"]["modalities"]) != self.modalities:
            raise ValueError(
                f"the transformer run was trained on modalities {stage_two['data']['modalities']}, this run uses "
                f"{self.modalities}; they must be the same list in the same order"
            )
        self.transformer_run = run
        self.setup_latents(stage_two["model"]["autoencoder_run"], stage_two["model"].get("network", {}))
        self.transformer = VAETransformerStage.build_modules(self)["transformer"]
        self.transformer.load_state_dict(load_run_state(run, "transformer"))
        self.transformer.to(self.device).eval().requires_grad_(False)
        self.frozen_scale = float(load_run_state(run, "latent_scale")["value"])
        self.loss_config = {**LOSS_DEFAULTS, **self.model_config.get("loss", {})}
        self.ssim = SSIMLoss(spatial_dims=3, data_range=2.0, win_size=7)

    def build_modules(self) -> dict[str, nn.Module]:
        return {"decoder": DecoderOnly(copy.deepcopy(self.autoencoder).train())}

    @property
    def scale(self) -> float:
        return self.frozen_scale

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        latents, images, mask = self.windows(batch)
        target, present = draw_requests(batch["available"], self.single_source_prob)
        with torch.no_grad():
            predicted = self.predict(self.transformer, latents, target, present).float()
        image = self.net("decoder")(predicted / self.scale).float()
        wanted = self.pick(images, target)
        l1 = weighted_l1(image, wanted, mask, float(self.loss_config["body_weight"]))
        loss, logs = l1, {"loss_l1": float(l1.detach())}
        if float(self.loss_config["ssim"]) > 0:
            ssim = self.ssim(image, wanted)
            loss = loss + float(self.loss_config["ssim"]) * ssim
            logs["loss_ssim"] = float(ssim.detach())
        self.optimise("decoder", loss)
        return logs

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.eval_net("decoder")(latent / self.scale)

    def bundle_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        from MedTransCore.models.vae_transformer.translator import WEIGHT_FILES

        return {
            WEIGHT_FILES["autoencoder"]: self.eval_net("decoder").autoencoder.state_dict(),
            WEIGHT_FILES["transformer"]: self.transformer.state_dict(),
        }

    def bundle_fields(self) -> dict[str, Any]:
        return {
            "network": self.network_fields(self.scale),
            "sampler": None,
            "grid": None,  # whole volumes: the translator slides only the transformer, in latent space
            "stages": {
                "aldm_autoencoder": run_summary(self.autoencoder_run),
                "vae_transformer": run_summary(self.transformer_run),
            },
        }


STAGE = DecoderStage
