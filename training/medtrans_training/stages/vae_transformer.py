"""The ``vae_transformer`` stage: the latent transformer of seed 000 (stage 2); exports a ``vae_transformer`` bundle.

Stage 1 is the ALDM autoencoder stage with ``network.kind: kl`` (one KL autoencoder for every modality); stage 3
(``vae_transformer_decoder``) fine-tunes its decoder on this stage's predictions. This stage's own bundle (stage-1
decoder) is the "stage 2 alone" row of the ablation.

Config::

    data:
      all_targets: true                # every modality of a case in each item ("targets", "available")
      patch: [64, 64, 64]              # at least the window; whole volumes (no augmentation) hit the latent cache
      augment: false
    model:
      autoencoder_run: runs/vae-autoencoder
      network: {grid: [12, 12, 12], patch: 2, dim: 128, depth: 4, heads: 4}   # build_transformer keywords
      loss: {latent: 1.0, image: 0.0, body_weight: 4.0}
      single_source_prob: 0.5
      latent_cache: true

The window (the bundle's ``grid``) is the transformer's latent grid times the autoencoder's down-sampling. Every
modality of an item is encoded whole by the frozen autoencoder, once per case (:class:`LatentCache`), and scaled to
unit standard deviation (the factor is measured on the first batch, as in ``aldm_diffusion``); each step then
takes one random window per item from the latents and the same region of the images (measured: encoding every
48^3 crop at every step cost ~5x the transformer's step on one CPU thread). Inference does the same: it encodes the
whole volume once and slides the transformer over its latents.

Each item asks for one random modality the case has, from a random non-empty subset of its other modalities
(exactly one with ``single_source_prob``), so one model serves every source set and attention learns to ignore
absent slots. Loss: L1 between predicted and true scaled target latents, plus (``loss.image`` > 0) a
body-weighted L1 between the decoded prediction and the target image through the frozen decoder.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from MedTransCore.errors import InputError
from MedTransCore.models.vae_transformer.network import (
    TRANSFORMER_DEFAULTS,
    build_transformer,
    resolve_transformer_config,
)
from MedTransCore.models.vae_transformer.translator import WEIGHT_FILES

from ..config_schema import _leaves
from .aldm_autoencoder import LatentCache, load_autoencoder, run_summary
from .aldm_diffusion import LatentScale
from .base import Stage
from .unet import weighted_l1

LOSS_DEFAULTS = {"latent": 1.0, "image": 0.0, "body_weight": 4.0}


def draw_requests(
    available: torch.Tensor, single_source_prob: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw, per item, a target among its available modalities and a non-empty subset of the others as sources.

    Args:
        available: ``(B, M)`` bool, the modalities each case has (at least two per item).
        single_source_prob: probability that an item gets exactly one source.
        generator: random stream (``None``: torch's global one).

    Returns:
        ``(B,)`` int64 target indices and ``(B, M)`` bool source presence (never including the target).
    """
    available = available.bool().cpu()
    if bool((available.sum(dim=1) < 2).any()):
        raise InputError("every case needs at least two modalities (a source and a target)")
    targets, present = [], torch.zeros_like(available)
    for row, have in enumerate(available):
        options = torch.nonzero(have).flatten()
        target = options[torch.randint(len(options), (), generator=generator)]
        others = options[options != target]
        if float(torch.rand((), generator=generator)) < single_source_prob:
            chosen = others[torch.randint(len(others), (1,), generator=generator)]
        else:
            chosen = others[torch.rand(len(others), generator=generator) < 0.5]
            if len(chosen) == 0:
                chosen = others[torch.randint(len(others), (1,), generator=generator)]
        present[row, chosen] = True
        targets.append(int(target))
    return torch.tensor(targets), present


class VAETransformerStage(Stage):
    """Trains ``transformer`` on the latents of a frozen KL autoencoder."""

    name = "vae_transformer"
    family = "vae_transformer"
    ema_modules = ("transformer",)
    #: the ``model`` section's keys (checked by ``config_schema``).
    model_schema: ClassVar[dict[str, Any]] = {
        **_leaves("autoencoder_run", "single_source_prob", "latent_cache"),
        "network": _leaves(*TRANSFORMER_DEFAULTS),
        "loss": _leaves(*LOSS_DEFAULTS),
        "optim": None,
    }

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        if not self.model_config.get("autoencoder_run"):
            raise ValueError(f"{self.name} needs model.autoencoder_run (a finished aldm_autoencoder run, kind kl)")
        self.setup_latents(self.model_config["autoencoder_run"], self.model_config.get("network", {}))
        self.loss_config = {**LOSS_DEFAULTS, **self.model_config.get("loss", {})}

    def setup_latents(self, autoencoder_run: str, network: dict[str, Any]) -> None:
        """Load the frozen autoencoder, resolve the transformer config and check the data fit both."""
        data = self.config["data"]
        if not data.get("all_targets"):
            raise InputError(f"the {self.name} stage needs data.all_targets: true (every modality of a case)")
        self.autoencoder_run = autoencoder_run
        self.autoencoder, self.autoencoder_config = load_autoencoder(autoencoder_run, self.device)
        if self.autoencoder.kind != "kl":
            raise ValueError(f"{autoencoder_run} trained a {self.autoencoder.kind!r} autoencoder; use network.kind: kl")
        self.network_config = resolve_transformer_config(**network)
        factor = self.autoencoder.downsample_factor
        self.window = [g * factor for g in self.network_config["grid"]]
        patch = data.get("patch")
        if not patch or any(int(p) < w or int(p) % factor for p, w in zip(patch[::-1], self.window, strict=True)):
            raise InputError(
                f"data.patch (x, y, z) must be at least the window {self.window[::-1]} (the transformer grid "
                f"{self.network_config['grid']} (z, y, x) times the autoencoder's down-sampling {factor}) and a "
                f"multiple of {factor}; got {patch}"
            )
        self.cache = LatentCache(self.autoencoder.encode, bool(self.model_config.get("latent_cache", True)))
        self.single_source_prob = float(self.model_config.get("single_source_prob", 0.5))
        if not 0.0 <= self.single_source_prob <= 1.0:
            raise ValueError(f"model.single_source_prob must be in [0, 1], got {self.single_source_prob}")

    def build_modules(self) -> dict[str, nn.Module]:
        transformer = build_transformer(
            latent_channels=self.autoencoder.latent_channels, modalities=self.modalities, **self.network_config
        )
        return {"transformer": transformer, "latent_scale": LatentScale()}

    @property
    def scale(self) -> float:
        return float(self.modules["latent_scale"].value)

    @torch.no_grad()
    def windows(
        self, batch: dict[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One window per item: scaled latents of every modality and the same region of the images and mask.

        Args:
            batch: a batch with ``targets`` ``(B, M, Z, Y, X)`` (background where a case lacks a modality).
            generator: random stream of the window positions (``None``: torch's global one).

        Returns:
            ``(B, M, C, *grid)`` scaled latents, ``(B, M, *window)`` images and ``(B, 1, *window)`` mask.
        """
        targets, factor = batch["targets"], self.autoencoder.downsample_factor
        b, m = targets.shape[:2]
        latents = torch.stack(
            [
                self.cache(targets[:, i : i + 1], list(batch["case"]), [key] * b)
                for i, key in enumerate(self.modalities)
            ],
            dim=1,
        )
        if self.scale == 0.0:
            self.modules["latent_scale"].measure(latents[batch["available"].bool()])
        grid = self.network_config["grid"]
        crops: tuple[list, list, list] = ([], [], [])
        for i in range(b):
            start = [int(torch.randint(0, s - g + 1, (), generator=generator)) for s, g in zip(latents.shape[3:], grid)]
            latent = tuple(slice(a, a + g) for a, g in zip(start, grid, strict=True))
            image = tuple(slice(a * factor, (a + g) * factor) for a, g in zip(start, grid, strict=True))
            crops[0].append(latents[i][(slice(None), slice(None), *latent)])
            crops[1].append(targets[i][(slice(None), *image)])
            crops[2].append(batch["mask"][i][(slice(None), *image)])
        return torch.stack(crops[0]) * self.scale, torch.stack(crops[1]), torch.stack(crops[2])

    def predict(
        self,
        transformer: nn.Module,
        latents: torch.Tensor,
        target: torch.Tensor,
        present: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, C, z, y, x)`` scaled target latents predicted from the ``present`` slots of ``latents``.

        Only as many slots as the fullest item has are passed (present ones first): attention costs the square of
        the tokens, and absent slots are masked out anyway (the result is the same).
        """
        present = present.to(latents.device)
        count = int(present.sum(dim=1).max())
        order = torch.argsort(present.int(), dim=1, descending=True, stable=True)[:, :count]
        rows = torch.arange(latents.shape[0], device=latents.device)[:, None]
        return transformer(latents[rows, order], order, present.gather(1, order), target.to(latents.device))

    @staticmethod
    def pick(stack: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``stack[b, index[b]]`` with the channel axis kept: ``(B, M, ...)`` -> ``(B, 1, ...)``."""
        return stack[torch.arange(stack.shape[0], device=stack.device), index.to(stack.device)].unsqueeze(1)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        latents, images, mask = self.windows(batch)
        target, present = draw_requests(batch["available"], self.single_source_prob)
        predicted = self.predict(self.net("transformer"), latents, target, present).float()
        truth = self.pick(latents, target).squeeze(1)
        latent_l1 = F.l1_loss(predicted, truth)
        loss = float(self.loss_config["latent"]) * latent_l1
        logs = {"loss_latent": float(latent_l1.detach())}
        if float(self.loss_config["image"]) > 0:
            image = self.autoencoder.decode(predicted / self.scale).float()
            wanted = self.pick(images, target)
            image_l1 = weighted_l1(image, wanted, mask, float(self.loss_config["body_weight"]))
            loss = loss + float(self.loss_config["image"]) * image_l1
            logs["loss_image"] = float(image_l1.detach())
        self.optimise("transformer", loss)
        return logs

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> image with the decoder this stage exports."""
        return self.autoencoder.decode(latent / self.scale)

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        # The same windows and requests at every validation: comparable numbers from one to the next.
        generator = torch.Generator().manual_seed(0)
        latents, images, mask = self.windows(batch, generator)
        target, present = draw_requests(batch["available"], 0.5, generator)
        transformer = self.eval_net("transformer") if "transformer" in self.modules else self.transformer
        predicted = self.predict(transformer, latents, target, present).float()
        image = self.decode(predicted).float()
        wanted, body = self.pick(images, target), mask > 0
        error = (image - wanted).abs()
        return {
            "val_latent_l1": float((predicted - self.pick(latents, target).squeeze(1)).abs().mean()),
            "val_mae_body": float(error[body].mean()) if body.any() else float(error.mean()),
        }

    def network_fields(self, scale: float) -> dict[str, Any]:
        """The bundle's ``network``: what :class:`VAETransformerTranslator` rebuilds from."""
        if scale == 0.0:
            raise ValueError("the latent scale factor was never measured: the run has not trained a step")
        return {
            "modalities": list(self.modalities),
            "autoencoder": dict(self.autoencoder_config),
            "transformer": dict(self.network_config),
            "scale_factor": scale,
        }

    def bundle_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {
            WEIGHT_FILES["autoencoder"]: self.autoencoder.state_dict(),
            WEIGHT_FILES["transformer"]: self.eval_net("transformer").state_dict(),
        }

    def bundle_fields(self) -> dict[str, Any]:
        return {
            "network": self.network_fields(self.scale),
            "sampler": None,
            "grid": None,  # whole volumes: the translator slides only the transformer, in latent space
            "stages": {"aldm_autoencoder": run_summary(self.autoencoder_run)},
        }


STAGE = VAETransformerStage
