"""The ``s2ldm_autoencoder`` stage: S2LDM's syncretic VQ autoencoder (seed paper 004, stage 1).

Config (``model`` section; everything of ``aldm_autoencoder`` plus the S2LDM terms)::

    data:
      modalities: [CT, CT_ARTERIAL, CT_VENOUS]
      pairs: [[CT, CT_ARTERIAL], [CT, CT_VENOUS]]    # NCCT -> CECT: the source is the NCCT of every pair
    model:
      network: {kind: vq, channels: [32, 64], num_embeddings: 512, embedding_dim: 4}   # build_autoencoder keywords
      loss: {body_weight: 4.0, regularisation: 1.0, ssim: 0.1, adversarial: 0.0, adversarial_start: 0,
             similarity: 0.1, similarity_gamma: 2.0}   # similarity: l3 of Eq. 2 (0: no L_sim); gamma of Eq. 1
      high_frequency: {alpha: 0.5, sigma: 1.0}        # the enhanced reconstruction target (alpha 0: none)
      discriminator: {channels: 16, num_layers_d: 3}  # used when loss.adversarial > 0
      codebook_reset: {every: 20, threshold: 0.03, until: 0.8}
      optim: {autoencoder: {lr: 2e-4}}

Each batch item is an NCCT/CECT pair of one case. One pass of the shared encoder embeds both (a weight-sharing
Siamese pair: the *syncretic encoder*), the decoder reconstructs the CECT from its own quantised embedding, and
the loss is Eq. 2 as reconstructed in :mod:`MedTransCore.models.s2ldm.networks`::

    L_AE = L_rec(D(q(E(x_ce))), x~_ce) + l1 L_q + l2 L_adv + l3 L_sim                              (Eq. 2)
    L_sim = sum_i w_i (1 - s_i),  w_i = sg[(1 - s_i)^g] / sum_j sg[(1 - s_j)^g],  s_i = cos(E(x_nc)_i, E(x_ce)_i)
                                                                                                  (Eq. 1)
    x~_ce = x_ce + alpha (x_ce - G_sigma * x_ce)                                  (high-frequency enhancement)

Choices (each written down because the seed's Eqs. 1-4 are lost): ``L_rec`` is ``aldm``'s body-weighted L1 (+ 3D
SSIM); ``L_q`` is the VQ commitment loss over *both* embeddings (the quantised NCCT latent is the diffusion's
condition); the similarity acts per latent voxel across channels on the encoder outputs before quantisation, its
focal weights normalised over the image pair and held constant in the gradient; ``g = 2``, ``l3 = 0.1``,
``alpha = 0.5``, ``sigma = 1`` voxel; the NCCT is never decoded (the paper's decoder is a CECT decoder). The
``aldm`` autoencoder stage's codebook reset (:func:`reset_dead_codes`) sees the encodings of both images.

Validation reports the CECT reconstruction against the real CECT (``val_mae_body``, ``val_psnr``) and its enhanced
target (``val_mae_enhanced``), the paper's NCCT-only strategy (the CECT decoder on the NCCT's embedding,
``val_mae_ncct_only``, against the CECT), the mean feature similarity (``val_similarity``) and the codes in use.
This stage feeds ``s2ldm_diffusion`` and has no bundle; its weights load into ``aldm``'s plain autoencoder.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from MedTransCore.models.aldm.networks import LatentAutoencoder, build_autoencoder, resolve_autoencoder_config
from MedTransCore.models.s2ldm.networks import (
    HIGH_FREQUENCY_DEFAULTS,
    SIMILARITY_DEFAULTS,
    SyncreticAutoencoder,
    adaptive_similarity_loss,
    feature_similarity,
    high_frequency_enhance,
)

from ..config_schema import _leaves, _per_module, _resolved_by
from .aldm_autoencoder import LOSS_DEFAULTS as ALDM_LOSS_DEFAULTS
from .aldm_autoencoder import RESET_DEFAULTS, AutoencoderStage, run_config
from .base import load_run_state

LOSS_DEFAULTS = {**ALDM_LOSS_DEFAULTS, **SIMILARITY_DEFAULTS}


class SyncreticAutoencoderStage(AutoencoderStage):
    """Trains the syncretic ``autoencoder`` (and ``discriminator`` when ``loss.adversarial > 0``) on NCCT/CECT pairs."""

    name = "s2ldm_autoencoder"
    family = None
    model_schema: ClassVar[dict[str, Any]] = {
        "network": _resolved_by(resolve_autoencoder_config),
        "loss": _leaves(*LOSS_DEFAULTS),
        "high_frequency": _leaves(*HIGH_FREQUENCY_DEFAULTS),
        "discriminator": _leaves("channels", "num_layers_d"),
        "codebook_reset": _leaves(*RESET_DEFAULTS),
        "optim": _per_module,
    }

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        super().__init__(config, device)
        self.loss_config = {**LOSS_DEFAULTS, **self.loss_config}
        self.high_frequency = {**HIGH_FREQUENCY_DEFAULTS, **self.model_config.get("high_frequency", {})}
        if min(float(self.loss_config["similarity"]), float(self.loss_config["similarity_gamma"])) < 0:
            raise ValueError("model.loss.similarity and model.loss.similarity_gamma must be >= 0")
        if float(self.high_frequency["alpha"]) < 0 or float(self.high_frequency["sigma"]) <= 0:
            raise ValueError(f"model.high_frequency needs alpha >= 0 and sigma > 0, got {self.high_frequency}")

    def build_modules(self) -> dict[str, nn.Module]:
        modules = super().build_modules()
        modules["autoencoder"] = SyncreticAutoencoder.from_autoencoder(modules["autoencoder"])
        return modules

    def enhanced(self, target: torch.Tensor) -> torch.Tensor:
        """The reconstruction target: the CECT after high-frequency enhancement (float32, also under bf16 autocast)."""
        with torch.autocast(device_type=target.device.type, enabled=False):
            alpha, sigma = float(self.high_frequency["alpha"]), float(self.high_frequency["sigma"])
            return high_frequency_enhance(target.float(), alpha, sigma)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        source, target, mask = batch["source"], batch["target"], batch["mask"]
        self._reset_codes_if_due(step, torch.cat([source, target]))
        wanted = self.enhanced(target)
        out = self.net("autoencoder")(source, target)  # one call: the shared encoder sees both images
        recon = out.reconstruction.float()
        rec = self._reconstruction_loss(recon, wanted, mask)
        sim = adaptive_similarity_loss(
            out.source_features, out.target_features, float(self.loss_config["similarity_gamma"])
        )
        reg = out.regularisation.float()
        total = rec + float(self.loss_config["regularisation"]) * reg + float(self.loss_config["similarity"]) * sim
        logs = {"loss_rec": float(rec.detach()), "loss_reg": float(reg.detach()), "loss_sim": float(sim.detach())}
        # LSGAN as in aldm_autoencoder; the enhanced CECT is the real image
        return self._optimise_with_gan(total, recon, wanted, logs, step)

    def validation_step(self, batch: dict[str, Any]) -> dict[str, float]:
        autoencoder = self.eval_net("autoencoder")
        source, target = batch["source"], batch["target"]
        body = batch["mask"] > 0

        def mae(image: torch.Tensor, reference: torch.Tensor) -> float:
            error = (image.float() - reference).abs()
            return float(error[body].mean()) if body.any() else float(error.mean())

        recon = autoencoder.decode(autoencoder.encode(target)).float()
        ncct_only = autoencoder.decode(autoencoder.encode(source)).float()  # the CECT decoder on the NCCT alone
        similarity = feature_similarity(autoencoder.features(source), autoencoder.features(target))
        mse = float((recon - target).pow(2).mean())
        metrics = {
            "val_mae_body": mae(recon, target),
            "val_mae_enhanced": mae(recon, self.enhanced(target)),
            "val_psnr": float(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12)))),
            "val_mae_ncct_only": mae(ncct_only, target),
            "val_mae_identity": mae(source, target),
            "val_similarity": float(similarity.mean()),
        }
        if autoencoder.kind == "vq":
            codes = autoencoder.net.index_quantize(torch.cat([source, target]))
            metrics["val_codes_used"] = float(torch.unique(codes).numel())
        return metrics


STAGE = SyncreticAutoencoderStage


def load_syncretic_autoencoder(
    run_dir: Any, device: torch.device | str
) -> tuple[LatentAutoencoder, dict[str, Any], dict[str, Any]]:
    """The frozen autoencoder of a finished ``s2ldm_autoencoder`` run (as ``aldm``'s ``load_autoencoder`` does).

    Returns:
        the module (eval mode, no gradients, on ``device``), its complete network config (with ``kind``) and the
        run's resolved config.

    Raises:
        FileNotFoundError: no such finished run.
        ValueError: a run of another stage.
    """
    config = run_config(run_dir)
    if config.get("stage") != SyncreticAutoencoderStage.name:
        raise ValueError(f"{run_dir} is a {config.get('stage')!r} run, not an {SyncreticAutoencoderStage.name!r} run")
    network = resolve_autoencoder_config(**config.get("model", {}).get("network", {}))
    cfg = dict(network)
    autoencoder = build_autoencoder(cfg.pop("kind"), **cfg)
    autoencoder.load_state_dict(load_run_state(run_dir, "autoencoder"))
    return autoencoder.to(device).eval().requires_grad_(False), network, config
