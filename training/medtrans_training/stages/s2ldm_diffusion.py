"""The ``s2ldm_diffusion`` stage: S2LDM's similarity-guided latent diffusion (stage 2); exports the ``s2ldm`` bundle.

Config (``model`` section)::

    model:
      autoencoder_run: runs/s2ldm-autoencoder     # a finished s2ldm_autoencoder run (same data normalisation)
      network: {channels: [32, 64, 64], conditioning: film}   # aldm's build_diffusion_unet keywords
      similarity_mask: {enabled: true, exponent: 2.0, scaling: minmax}   # Eq. 3; enabled: false: the ablation
      scheduler: {}                    # overrides of MedTransCore.models.aldm.sampler.SCHEDULE_DEFAULTS
      default_sampler: ddim            # the bundle's sampler: ddim or dpmpp
      default_steps: 10
      val_steps: 5
      latent_cache: true
      latent_crop: 12                  # random crops of the latents (edge in latent voxels); null = whole
      grid: null
      output: direct                   # the bundle's output: direct (the paper) or residual (S2LDMTranslator)
      prediction: epsilon              # the UNet predicts the noise (the paper) or residual: the latent enhancement

Training (Eqs. 3-4 as reconstructed in :mod:`MedTransCore.models.s2ldm.networks`)::

    s_i = cos(E(x_nc)_i, E(x_ce)_i),  S' = (s - min s) / (max s - min s) per pair,  p = step / train.steps
    M_p = S' + (1 - S') p^k                                                          (Eq. 3, k = 2)
    L = || eps - eps_theta(sqrt(a_t) z_ce + sqrt(1 - a_t) eps, t, M_p (.) z_nc, y) ||^2,  t ~ U{0..T-1}   (Eq. 4)

with ``z = s * E(x)`` the frozen syncretic encoder's quantised latents scaled to unit variance (``aldm``'s
:class:`LatentScale`, measured on the first batch), ``y`` the target phase (``aldm``'s class / FiLM conditioning
over ``data.modalities``) and the mask broadcast over the latent channels. The paper's epochs become steps: the
mask is a pure function of the step, so a resumed run (or one rebuilt with ``train.stop_at``) follows the same
curve. Validation and inference use an all-ones mask (the condition is the NCCT latent alone). Everything else
(latent cache, random latent crops, validation samples) is ``aldm_diffusion``'s, inherited.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from MedTransCore.models.aldm.networks import resolve_diffusion_config
from MedTransCore.models.aldm.sampler import SAMPLERS, SCHEDULE_DEFAULTS, build_scheduler
from MedTransCore.models.s2ldm.networks import (
    MASK_DEFAULTS,
    MASK_SCALINGS,
    PREDICTIONS,
    build_diffusion,
    feature_similarity,
    guidance,
    similarity_mask,
)
from MedTransCore.models.s2ldm.translator import OUTPUTS, WEIGHT_FILES

from ..config_schema import _leaves, _per_module, _resolved_by
from .aldm_autoencoder import LatentCache, run_summary
from .aldm_diffusion import DiffusionStage, LatentScale
from .base import Stage
from .s2ldm_autoencoder import SyncreticAutoencoderStage, load_syncretic_autoencoder


class SimilarityDiffusionStage(DiffusionStage):
    """Trains ``diffusion`` on the latents of a frozen syncretic autoencoder, with the dynamic similarity mask."""

    name = "s2ldm_diffusion"
    family = "s2ldm"
    ema_modules = ("diffusion",)
    model_schema: ClassVar[dict[str, Any]] = {
        **_leaves(
            "autoencoder_run",
            "default_sampler",
            "default_steps",
            "val_steps",
            "latent_cache",
            "latent_crop",
            "grid",
            "output",
            "prediction",
        ),
        "network": _resolved_by(resolve_diffusion_config),
        "similarity_mask": _leaves(*MASK_DEFAULTS),
        "scheduler": _leaves(*SCHEDULE_DEFAULTS),
        "optim": _per_module,
    }

    def __init__(self, config: dict[str, Any], device: torch.device | str = "cpu") -> None:
        Stage.__init__(self, config, device)  # not aldm_diffusion's: there is no MS-SPADE run to load
        if not self.model_config.get("autoencoder_run"):
            raise ValueError("s2ldm_diffusion needs model.autoencoder_run (a finished s2ldm_autoencoder run folder)")
        self.default_sampler = self.model_config.get("default_sampler", "ddim")
        if self.default_sampler not in SAMPLERS:
            raise ValueError(f"model.default_sampler must be one of {SAMPLERS}, got {self.default_sampler!r}")
        self.output_mode = self.model_config.get("output", "direct")
        if self.output_mode not in OUTPUTS:
            raise ValueError(f"model.output must be one of {OUTPUTS}, got {self.output_mode!r}")
        self.mask_config = {**MASK_DEFAULTS, **self.model_config.get("similarity_mask", {})}
        mask = self.mask_config
        if (
            not isinstance(mask["enabled"], bool)
            or float(mask["exponent"]) <= 0
            or mask["scaling"] not in MASK_SCALINGS
        ):
            raise ValueError(
                "model.similarity_mask needs enabled: true/false, exponent > 0 and scaling one of "
                f"{', '.join(MASK_SCALINGS)}; got {mask}"
            )
        run = self.model_config["autoencoder_run"]
        self.autoencoder, self.autoencoder_config, autoencoder_run = load_syncretic_autoencoder(run, self.device)
        window = config["data"].get("intensity_window")
        if autoencoder_run["data"].get("intensity_window") != window:
            raise ValueError(
                f"the autoencoder run {run} normalised its CT with data.intensity_window "
                f"{autoencoder_run['data'].get('intensity_window')}, this run with {window}: they must be the same"
            )
        self.network_config = resolve_diffusion_config(**self.model_config.get("network", {}))
        prediction = self.model_config.get("prediction", "epsilon")
        if prediction not in PREDICTIONS:
            raise ValueError(f"model.prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if prediction != "epsilon":  # recorded with the network: the translator rebuilds the same wrapper
            self.network_config["prediction"] = prediction
        self.schedule = {**SCHEDULE_DEFAULTS, **self.model_config.get("scheduler", {})}
        self.train_scheduler = build_scheduler("ddpm", **self.schedule)
        self.sample_scheduler = build_scheduler("ddim", **self.schedule)
        self.latents = LatentCache(self.autoencoder.encode, bool(self.model_config.get("latent_cache", True)))
        #: training progress p of the current step; None outside training_step (validation: all-ones mask).
        self.progress: float | None = None
        self.last_mask_mean = 1.0

    def build_modules(self) -> dict[str, nn.Module]:
        unet = build_diffusion(
            latent_channels=self.autoencoder.latent_channels,
            num_modalities=len(self.modalities),
            **self.network_config,
        )
        unet.set_schedule(self.train_scheduler.alphas_cumprod)
        return {"diffusion": unet, "latent_scale": LatentScale()}

    @torch.no_grad()
    def condition(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled ``(x0, condition)``: ``(B, C, ...)`` CECT latents and ``(B, 2C, ...)`` ``[NCCT latent, mask]``.

        The mask is Eq. 3's at ``self.progress`` during training, all ones otherwise (and in the ablation).
        """
        source = self.latents(batch["source"], batch["case"], batch["source_key"])
        target = self.latents(batch["target"], batch["case"], batch["target_key"])
        if self.scale == 0.0:
            self.modules["latent_scale"].measure(torch.cat([source, target]))
        mask = None
        if self.mask_config["enabled"] and self.progress is not None:
            similarity = feature_similarity(source, target)
            mask = similarity_mask(
                similarity, self.progress, float(self.mask_config["exponent"]), str(self.mask_config["scaling"])
            )
            self.last_mask_mean = float(mask.mean())
        return target * self.scale, guidance(source * self.scale, mask)

    def training_step(self, batch: dict[str, Any], step: int) -> dict[str, float]:
        self.progress = min(step / max(int(self.train_config["steps"]), 1), 1.0)
        try:
            logs = super().training_step(batch, step)  # aldm_diffusion's Eq. 4 step on self.condition
        finally:
            self.progress = None
        return {**logs, "mask_mean": self.last_mask_mean}

    def denoising_loss(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        target_index: torch.Tensor,
        noise: torch.Tensor,
        x0: torch.Tensor,
    ) -> tuple[str, torch.Tensor]:
        """Eq. 4 as the paper has it, or with the clean latent as the target (``prediction: residual``): an MSE on
        ``x0`` (``loss_x0``), uniform in ``t``.

        The noise MSE of a residual network would weigh each ``t`` by ``a_t / (1 - a_t)`` (~700 at ``t = 0``, ~0 at
        ``t = T``): the low-noise steps, where the enhancement is small against the noise-free latent, would
        dominate.
        """
        if self.network_config.get("prediction", "epsilon") == "epsilon":
            return super().denoising_loss(noisy, t, cond, target_index, noise, x0)
        predicted = self.net("diffusion")(noisy, t, cond, target_index, output="x0")
        return "loss_x0", F.mse_loss(predicted.float(), x0)

    def bundle_weights(self) -> dict[str, dict[str, torch.Tensor]]:
        return {
            WEIGHT_FILES["autoencoder"]: self.autoencoder.state_dict(),
            WEIGHT_FILES["diffusion"]: self.eval_net("diffusion").state_dict(),
        }

    def bundle_fields(self) -> dict[str, Any]:
        return {
            "network": {
                "modalities": list(self.modalities),
                "autoencoder": dict(self.autoencoder_config),
                "diffusion": dict(self.network_config),
            },
            "sampler": self.sampler_fields(),
            "grid": self.model_config.get("grid"),
            "output": self.output_mode,
            # how training masked the condition (Eq. 3); inference always uses an all-ones mask
            "similarity_mask": {
                **self.mask_config,
                "formula": "M = S' + (1 - S') * (step / steps) ** exponent, S' = scaling of cos(z_nc, z_ce)",
            },
            "stages": {SyncreticAutoencoderStage.name: run_summary(self.model_config["autoencoder_run"])},
        }


STAGE = SimilarityDiffusionStage
