"""The ``aldm_diffusion`` stage: the latent diffusion UNet (ALDM stage 3); exports the ``aldm`` bundle.

Config (``model`` section)::

    model:
      autoencoder_run: runs/aldm_autoencoder
      spade_run: runs/aldm_spade
      network: {channels: [32, 64, 64], conditioning: film}    # build_diffusion_unet keywords
      scheduler: {}                    # overrides of MedTransCore.models.aldm.sampler.SCHEDULE_DEFAULTS
      default_sampler: ddim            # the bundle's sampler: ddim or dpmpp (choose from the benchmark)
      default_steps: 10                # sampler steps a bundle uses by default (choose from the benchmark)
      val_steps: 5                     # DDIM steps of the validation samples
      latent_cache: true
      latent_crop: 12                  # train on random crops of the latents (edge in latent voxels); null = whole
      grid: null                       # bundle grid; null = whole volumes (the networks are fully convolutional)

Training (paper Eq. 4): ``x0 = s * E(target)``, condition ``[s * E(source), s * SPADE(E(source), target)]``,
``t ~ U{0..T-1}``, ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps``, loss ``|| eps - eps_theta(x_t, t, cond, y) ||^2``.
Random latent crops (``latent_crop``) make a CPU step several times cheaper than whole latents (measured: a
batch of 8 costs ~1.4 CPU-s at 12^3 and ~8.5 CPU-s at 16^3); the UNet is fully convolutional and inference runs
on whole latents. The scale factor ``s`` (1 / std of the training latents, as LDM's ``scale_by_std``) is measured on the first
batch (averaged over ranks), kept in the ``latent_scale`` module's buffer (checkpointed, resumed) and written
into the bundle's ``sampler`` metadata.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from MedTransCore.models.aldm.networks import (
    build_diffusion_unet,
    build_spade,
    resolve_diffusion_config,
    resolve_spade_config,
)
from MedTransCore.models.aldm.sampler import SAMPLERS, SCHEDULE_DEFAULTS, build_scheduler, ddim_sample
from MedTransCore.models.aldm.translator import WEIGHT_FILES

from .aldm_autoencoder import LatentCache, load_autoencoder, run_config, run_summary
from .base import Stage, load_run_state


class LatentScale(nn.Module):
    """Holds the latent scale factor as a buffer (0 until measured)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("value", torch.zeros(()))

    @torch.no_grad()
    def measure(self, latents: torch.Tensor) -> None:
        """Set the factor to 1 / std of ``latents`` (averaged over DDP ranks)."""
        std = latents.float().std().reshape(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(std)
            std /= dist.get_world_size()
        self.value.fill_(1.0 / max(float(std), 1e-6))


class DiffusionStage(Stage):
    """Trains ``diffusion`` on latents of a frozen autoencoder and MS-SPADE."""

    name = "aldm_diffusion"
    family = "aldm"
    ema_modules = ("diffusion",)

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        for key in ("autoencoder_run", "spade_run"):
            if not self.model_config.get(key):
                raise ValueError(f"aldm_diffusion needs model.{key} (a finished run folder)")
        self.default_sampler = self.model_config.get("default_sampler", "ddim")
        if self.default_sampler not in SAMPLERS:
            raise ValueError(f"model.default_sampler must be one of {SAMPLERS}, got {self.default_sampler!r}")
        self.autoencoder, self.autoencoder_config = load_autoencoder(self.model_config["autoencoder_run"], self.device)
        spade_run = run_config(self.model_config["spade_run"])
        if list(spade_run["data"]["modalities"]) != self.modalities:
            raise ValueError(
                f"the spade run was trained on modalities {spade_run['data']['modalities']}, "
                f"this run uses {self.modalities}; they must be the same list in the same order"
            )
        self.spade_config = resolve_spade_config(**spade_run.get("model", {}).get("network", {}))
        self.spade = build_spade(
            latent_channels=self.autoencoder.latent_channels, modalities=self.modalities, **self.spade_config
        )
        self.spade.load_state_dict(load_run_state(self.model_config["spade_run"], "spade"))
        self.spade.to(self.device).eval().requires_grad_(False)
        self.network_config = resolve_diffusion_config(**self.model_config.get("network", {}))
        self.schedule = {**SCHEDULE_DEFAULTS, **self.model_config.get("scheduler", {})}
        self.train_scheduler = build_scheduler("ddpm", **self.schedule)
        self.sample_scheduler = build_scheduler("ddim", **self.schedule)
        cache = bool(self.model_config.get("latent_cache", True))
        self.latents = LatentCache(self.autoencoder.encode, cache)
        # The frozen MS-SPADE output depends only on the source latent and the target: cached the same way.
        self.like = LatentCache(self.spade, cache)

    def build_modules(self) -> dict[str, nn.Module]:
        unet = build_diffusion_unet(
            latent_channels=self.autoencoder.latent_channels,
            num_modalities=len(self.modalities),
            **self.network_config,
        )
        return {"diffusion": unet, "latent_scale": LatentScale()}

    @property
    def scale(self) -> float:
        return float(self.modules["latent_scale"].value)

    @torch.no_grad()
    def condition(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled ``(x0, condition)``: ``(B, C, ...)`` target latents and ``(B, 2C, ...)`` source + SPADE."""
        source = self.latents(batch["source"], batch["case"], batch["source_key"])
        target = self.latents(batch["target"], batch["case"], batch["target_key"])
        if self.scale == 0.0:
            self.modules["latent_scale"].measure(torch.cat([source, target]))
        pairs = [f"{s}->{t}" for s, t in zip(batch["source_key"], batch["target_key"], strict=True)]
        like = self.like(source, batch["case"], pairs, extras=list(batch["target_key"]))
        return target * self.scale, torch.cat([source, like], dim=1) * self.scale

    def _random_crop(self, x0: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same random ``latent_crop``^3 window of ``x0`` and ``cond``, one window per batch item."""
        edge = self.model_config.get("latent_crop")
        if not edge or all(int(edge) >= s for s in x0.shape[2:]):
            return x0, cond
        size = [min(int(edge), s) for s in x0.shape[2:]]
        crops = []
        for i in range(x0.shape[0]):
            start = [int(torch.randint(0, s - e + 1, ())) for s, e in zip(x0.shape[2:], size, strict=True)]
            window = (slice(None),) + tuple(slice(a, a + e) for a, e in zip(start, size, strict=True))
            crops.append((x0[i][window], cond[i][window]))
        return torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops])

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        x0, cond = self._random_crop(*self.condition(batch))
        noise = torch.randn_like(x0)
        t = torch.randint(0, self.train_scheduler.num_train_timesteps, (x0.shape[0],), device=x0.device)
        noisy = self.train_scheduler.add_noise(x0, noise, t)
        name, loss = self.denoising_loss(noisy, t, cond, batch["target_modality"], noise, x0)
        self.optimise("diffusion", loss)
        return {name: float(loss.detach())}

    def denoising_loss(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        target_index: torch.Tensor,
        noise: torch.Tensor,
        x0: torch.Tensor,
    ) -> tuple[str, torch.Tensor]:
        """The step's objective and its log name: the MSE of the predicted noise (``loss_mse``)."""
        eps = self.net("diffusion")(noisy, t, cond, target_index)
        return "loss_mse", F.mse_loss(eps.float(), noise)

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        x0, cond = self.condition(batch)
        net = self.eval_net("diffusion")
        # A fixed noise level grid and seed: comparable numbers from one validation to the next.
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        t = torch.linspace(50, self.train_scheduler.num_train_timesteps - 50, x0.shape[0]).long().to(x0.device)
        eps = net(self.train_scheduler.add_noise(x0, noise, t), t, cond, batch["target_modality"]).float()
        sample = ddim_sample(
            net, cond, batch["target_modality"], self.sample_scheduler, int(self.model_config.get("val_steps", 5))
        )
        image = self.autoencoder.decode(sample / self.scale).float()
        body = batch["mask"] > 0
        error = (image - batch["target"]).abs()
        return {
            "val_mse": float(F.mse_loss(eps, noise)),
            "val_latent_l1": float((sample - x0).abs().mean()),
            "val_mae_body": float(error[body].mean()) if body.any() else float(error.mean()),
        }

    def bundle_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {
            WEIGHT_FILES["autoencoder"]: self.autoencoder.state_dict(),
            WEIGHT_FILES["spade"]: self.spade.state_dict(),
            WEIGHT_FILES["diffusion"]: self.eval_net("diffusion").state_dict(),
        }

    def sampler_fields(self) -> dict[str, Any]:
        """The bundle's ``sampler``: the noise schedule, the default sampler and steps, and the latent scale."""
        if self.scale == 0.0:
            raise ValueError("the latent scale factor was never measured: the run has not trained a step")
        return {
            "scheduler": self.default_sampler,
            **self.schedule,
            "prediction_type": "epsilon",
            "clip_sample": False,
            "eta": 0.0,
            "default_steps": int(self.model_config.get("default_steps", 10)),
            "scale_factor": self.scale,
        }

    def bundle_fields(self) -> dict[str, Any]:
        return {
            "network": {
                "modalities": list(self.modalities),
                "autoencoder": dict(self.autoencoder_config),
                "spade": dict(self.spade_config),
                "diffusion": dict(self.network_config),
            },
            "sampler": self.sampler_fields(),
            "grid": self.model_config.get("grid"),
            "stages": {
                "aldm_autoencoder": run_summary(self.model_config["autoencoder_run"]),
                "aldm_spade": run_summary(self.model_config["spade_run"]),
            },
        }


STAGE = DiffusionStage
