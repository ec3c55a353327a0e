"""The ``aldm_autoencoder`` stage: the shared VQ (or KL) autoencoder of every modality (ALDM stage 1).

Config (``model`` section)::

    model:
      network: {kind: vq, channels: [32, 64], num_embeddings: 512, embedding_dim: 4}   # build_autoencoder keywords
      loss: {body_weight: 4.0, regularisation: 1.0, ssim: 0.1, adversarial: 0.0, adversarial_start: 0}
      discriminator: {channels: 16, num_layers_d: 3}       # used when loss.adversarial > 0
      codebook_reset: {every: 20, threshold: 0.03, until: 0.8}   # VQ only (see reset_dead_codes)
      optim: {autoencoder: {lr: 2e-4}, discriminator: {lr: 2e-4, betas: [0.5, 0.9]}}

Losses work offline (no downloaded feature network): body-weighted L1, 3D SSIM, the VQ commitment loss (or the
KL divergence for ``kind: kl``), and an optional LSGAN patch adversarial loss. Every image of a batch (sources
and targets) is a training sample. This stage feeds ``aldm_spade`` and ``aldm_diffusion``; it has no bundle.

VQ codebook collapse: MONAI's EMA quantizer starts from N(0, 1) codes while a fresh encoder outputs values near
0, so every latent voxel picks the same code and the unused codes drift away for good (measured here: the
reconstruction loss stalled at that of a constant image). Dead codes are therefore re-seeded from current
encoder outputs (the usual "codebook reset"), at the first step and every ``codebook_reset.every`` steps until
``until`` of the run. No EMA copy is kept: averaging weights across resets would mismatch codes and decoder.

The module also holds what the later ALDM stages share: :func:`load_autoencoder` (a frozen autoencoder from a
finished run) and :class:`LatentCache`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from monai.losses import SSIMLoss
from monai.networks.nets import PatchDiscriminator
from torch import nn

from MedTransCore.models.aldm.networks import LatentAutoencoder, build_autoencoder, resolve_autoencoder_config

from ..trainer import CONFIG_NAME
from .base import CHECKPOINT_NAME, Stage, load_run_state
from .unet import weighted_l1

LOSS_DEFAULTS = {"body_weight": 4.0, "regularisation": None, "ssim": 0.1, "adversarial": 0.0, "adversarial_start": 0}
RESET_DEFAULTS = {"every": 20, "threshold": 0.03, "until": 0.8}
# Weight of the regularisation loss per kind: the VQ commitment loss is already scaled by commitment_cost;
# the KL term is kept tiny so latents stay informative (as in LDM).
REGULARISATION_DEFAULTS = {"vq": 1.0, "kl": 1e-6}


class AutoencoderStage(Stage):
    """Trains ``autoencoder`` (and ``discriminator`` when ``loss.adversarial > 0``)."""

    name = "aldm_autoencoder"
    family = None

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        self.network_config = resolve_autoencoder_config(**self.model_config.get("network", {}))
        self.loss_config = {**LOSS_DEFAULTS, **self.model_config.get("loss", {})}
        if self.loss_config["regularisation"] is None:
            self.loss_config["regularisation"] = REGULARISATION_DEFAULTS[self.network_config["kind"]]
        self.ssim = SSIMLoss(spatial_dims=3, data_range=2.0, win_size=7)
        self.reset_config = {**RESET_DEFAULTS, **self.model_config.get("codebook_reset", {})}

    @property
    def uses_gan(self) -> bool:
        return float(self.loss_config["adversarial"]) > 0

    def build_modules(self) -> dict[str, nn.Module]:
        cfg = dict(self.network_config)
        modules: dict[str, nn.Module] = {"autoencoder": build_autoencoder(cfg.pop("kind"), **cfg)}
        if self.uses_gan:
            disc = {"channels": 16, "num_layers_d": 3, **self.model_config.get("discriminator", {})}
            modules["discriminator"] = PatchDiscriminator(
                spatial_dims=3,
                channels=int(disc["channels"]),
                in_channels=1,
                num_layers_d=int(disc["num_layers_d"]),
                norm="INSTANCE",
            )
        return modules

    def _reconstruction_loss(self, recon: torch.Tensor, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        loss = weighted_l1(recon, images, mask, float(self.loss_config["body_weight"]))
        if float(self.loss_config["ssim"]) > 0:
            loss = loss + float(self.loss_config["ssim"]) * self.ssim(recon, images)
        return loss

    def _reset_due(self, step: int) -> bool:
        cfg = self.reset_config
        if self.network_config["kind"] != "vq" or not cfg["every"]:
            return False
        return step % int(cfg["every"]) == 0 and step < float(cfg["until"]) * int(self.train_config["steps"])

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        images = torch.cat([batch["source"], batch["target"]])
        mask = torch.cat([batch["mask"], batch["mask"]])
        self._reset_codes_if_due(step, images)
        recon, reg = self.net("autoencoder")(images)
        recon = recon.float()
        rec = self._reconstruction_loss(recon, images, mask)
        total = rec + float(self.loss_config["regularisation"]) * reg.float()
        logs = {"loss_rec": float(rec.detach()), "loss_reg": float(reg.detach())}
        return self._optimise_with_gan(total, recon, images, logs, step)

    def _reset_codes_if_due(self, step: int, images: torch.Tensor) -> None:
        """Re-seed the VQ codebook's dead codes from the encodings of ``images`` when the schedule says so."""
        if not self._reset_due(step):
            return
        autoencoder = self.unwrapped("autoencoder")
        with torch.no_grad():
            encodings = autoencoder.net.encode(images).float()
        reset_dead_codes(autoencoder.net.quantizer.quantizer, encodings, float(self.reset_config["threshold"]))

    def _optimise_with_gan(
        self, total: torch.Tensor, recon: torch.Tensor, real: torch.Tensor, logs: dict[str, float], step: int
    ) -> dict[str, float]:
        """Step the autoencoder on ``total`` (+ the LSGAN generator term once the GAN has started), then the
        patch discriminator on ``real`` against ``recon``; returns ``logs`` with the GAN losses added."""
        adversarial = self.uses_gan and step >= int(self.loss_config["adversarial_start"])
        if adversarial:
            disc = self.unwrapped("discriminator").requires_grad_(False)
            score = disc(recon)[-1].float()
            adv = F.mse_loss(score, torch.ones_like(score))
            disc.requires_grad_(True)
            total = total + float(self.loss_config["adversarial"]) * adv
            logs["loss_adv"] = float(adv.detach())
        self.optimise("autoencoder", total)
        if adversarial:
            scores = self.net("discriminator")(torch.cat([real, recon.detach()]))[-1].float()
            real_score, fake_score = scores.chunk(2)
            loss_d = 0.5 * (
                F.mse_loss(real_score, torch.ones_like(real_score))
                + F.mse_loss(fake_score, torch.zeros_like(fake_score))
            )
            self.optimise("discriminator", loss_d)
            logs["loss_d"] = float(loss_d.detach())
        return logs

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        autoencoder = self.eval_net("autoencoder")
        images = torch.cat([batch["source"], batch["target"]])
        body = torch.cat([batch["mask"], batch["mask"]]) > 0
        recon = autoencoder.decode(autoencoder.encode(images)).float()
        error = (recon - images).abs()
        mse = float((recon - images).pow(2).mean())
        metrics = {
            "val_mae_body": float(error[body].mean()) if body.any() else float(error.mean()),
            "val_psnr": float(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12)))),
        }
        if autoencoder.kind == "vq":  # a collapsed codebook shows as very few codes in use
            metrics["val_codes_used"] = float(torch.unique(autoencoder.net.index_quantize(images)).numel())
        return metrics


STAGE = AutoencoderStage


@torch.no_grad()
def reset_dead_codes(quantizer: nn.Module, encodings: torch.Tensor, threshold: float) -> int:
    """Re-seed rarely used codes of a MONAI ``EMAQuantizer`` with random encoder outputs.

    A code is dead when its EMA usage is below ``threshold`` times the mean usage (at the first call every
    usage is 0, so every code is seeded from the data). Its vector becomes a random encoding (rank 0's, shared
    under DDP) and its usage the mean; ``ema_w`` is rebuilt so that every code keeps exactly its vector.

    Args:
        quantizer: the ``EMAQuantizer`` (``embedding``, ``ema_cluster_size``, ``ema_w``, ``epsilon``).
        encodings: ``(B, D, z, y, x)`` encoder outputs before quantisation.
        threshold: relative usage below which a code is re-seeded.

    Returns:
        the number of re-seeded codes.
    """
    usage = quantizer.ema_cluster_size
    mean = float(usage.mean())
    dead = usage <= threshold * mean if mean > 0 else torch.ones_like(usage, dtype=torch.bool)
    count = int(dead.sum())
    if count == 0:
        return 0
    flat = encodings.permute(0, *range(2, encodings.ndim), 1).reshape(-1, encodings.shape[1])
    picks = flat[torch.randint(0, flat.shape[0], (count,), device=flat.device)]
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(picks, src=0)
    weight = quantizer.embedding.weight
    weight[dead] = picks.to(weight.dtype)
    usage[dead] = max(mean, 1.0)
    n = usage.sum()
    smoothed = (usage + quantizer.epsilon) / (n + usage.numel() * quantizer.epsilon) * n
    quantizer.ema_w.copy_(weight * smoothed[:, None])
    return count


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """The resolved config a run was trained with."""
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_NAME}; train that stage first")
    return json.loads(path.read_text())


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """Provenance of an earlier stage's run for the bundle: folder, steps trained, commands, config."""
    from ..trainer import RUN_NAME

    record_path = Path(run_dir) / RUN_NAME
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    checkpoint = torch.load(Path(run_dir) / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    return {
        "run_dir": str(run_dir),
        "steps": int(checkpoint["step"]),
        "commands": record.get("commands", []),
        "runs": record.get("runs", []),  # per command: start step, step reached, finished / stopped / interrupted
        "device": record.get("device", {}),
        "config": run_config(run_dir),
    }


def load_autoencoder(run_dir: str | Path, device: torch.device | str) -> tuple[LatentAutoencoder, dict[str, Any]]:
    """A frozen autoencoder (EMA weights) from a finished ``aldm_autoencoder`` run.

    Returns:
        the module (eval mode, no gradients, on ``device``) and its complete network config (with ``kind``).
    """
    config = run_config(run_dir)
    if config.get("stage") != AutoencoderStage.name:
        raise ValueError(f"{run_dir} is a {config.get('stage')!r} run, not an {AutoencoderStage.name!r} run")
    network = resolve_autoencoder_config(**config.get("model", {}).get("network", {}))
    cfg = dict(network)
    autoencoder = build_autoencoder(cfg.pop("kind"), **cfg)
    autoencoder.load_state_dict(load_run_state(run_dir, "autoencoder"))
    return autoencoder.to(device).eval().requires_grad_(False), network


class LatentCache:
    """Latents of whole images, re-used when the same case and modality come back unchanged.

    With whole-volume patches and no augmentation (``data.augment: false``) every visit of a case gives the
    same image, and encoding costs several times the diffusion UNet's step; the cache then encodes each image
    once. A fingerprint (sum and absolute sum) guards against changed images (crops, augmentation): they are
    simply encoded again.

    Args:
        encode: ``(N, 1, Z, Y, X)`` images -> ``(N, C, z, y, x)`` latents (called under ``torch.no_grad``).
        enabled: ``False`` encodes every time.
    """

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], enabled: bool = True) -> None:
        self.encode = encode
        self.enabled = enabled
        self.store: dict[tuple[str, str], tuple[tuple, torch.Tensor]] = {}

    @staticmethod
    def _fingerprint(image: torch.Tensor) -> tuple:
        return (tuple(image.shape), round(float(image.sum()), 3), round(float(image.abs().sum()), 3))

    @torch.no_grad()
    def __call__(
        self, images: torch.Tensor, cases: list[str], keys: list[str], extras: list | None = None
    ) -> torch.Tensor:
        """``(B, 1, Z, Y, X)`` images of ``cases``/``keys`` (modality keys) -> ``(B, C, z, y, x)`` latents.

        With ``extras`` (one per item, e.g. target modalities), ``encode`` is called as ``encode(images, extras)``.
        """
        run = self.encode if extras is None else (lambda x, idx: self.encode(x, [extras[i] for i in idx]))
        if not self.enabled:
            return (run(images) if extras is None else run(images, range(len(extras)))).float()
        prints = [self._fingerprint(image) for image in images]
        missing = [
            i
            for i, (case, key) in enumerate(zip(cases, keys, strict=True))
            if self.store.get((case, key), (None,))[0] != prints[i]
        ]
        if missing:
            fresh = (run(images[missing]) if extras is None else run(images[missing], missing)).float()
            for i, latent in zip(missing, fresh, strict=True):
                self.store[(cases[i], keys[i])] = (prints[i], latent)
        return torch.stack([self.store[(case, key)][1] for case, key in zip(cases, keys, strict=True)])
