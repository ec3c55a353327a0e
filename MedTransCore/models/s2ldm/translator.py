"""The ``s2ldm`` family at inference: encode the NCCT, sample the CECT latent with an all-ones mask, decode.

Bundle layout: ``autoencoder.safetensors`` (the syncretic autoencoder's weights, loaded into a plain
``aldm`` autoencoder: only the NCCT is encoded here) and ``diffusion.safetensors`` (the
:class:`~.networks.SimilarityGuidedUNet`). ``metadata["network"]`` holds ``modalities`` (the target conditioning
order) and the exact ``autoencoder`` and ``diffusion`` keyword configs; ``metadata["sampler"]`` the schedule, the
default sampler (``ddim`` or ``dpmpp``, ``aldm``'s loops), ``default_steps`` and the latent ``scale_factor``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...bundles import Bundle
from ...errors import BundleError, InputError
from ..aldm.sampler import SAMPLERS, SCHEDULE_DEFAULTS, build_scheduler, sample
from ..aldm.translator import BACKGROUND, BYTES_PER_VOXEL, _load
from ..base import CancelFn, ProgressFn, Translator
from .networks import build_networks, guidance

WEIGHT_FILES = {"autoencoder": "autoencoder.safetensors", "diffusion": "diffusion.safetensors"}


class S2LDMTranslator(Translator):
    """Similarity-aware syncretic latent diffusion (seed paper 004) bound to one bundle.

    Args:
        bundle: an ``s2ldm`` bundle.
        device: where the networks run.
    """

    family = "s2ldm"
    stochastic = True

    def __init__(self, bundle: Bundle, device: torch.device | str = "cpu") -> None:
        super().__init__(bundle, device)
        network = bundle.metadata["network"]
        sampler = bundle.metadata.get("sampler") or {}
        try:
            self.autoencoder, self.diffusion = build_networks(network)
            self.scheduler = build_scheduler("ddim", **{k: sampler[k] for k in SCHEDULE_DEFAULTS if k in sampler})
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle {bundle.name!r}: invalid s2ldm configuration: {exc}") from exc
        if "scale_factor" not in sampler:
            raise BundleError(f"bundle {bundle.name!r}: sampler.scale_factor is missing")
        self.scale_factor = float(sampler["scale_factor"])
        self.sampler = sampler.get("scheduler", "ddim")
        if self.sampler not in SAMPLERS:
            raise BundleError(
                f"bundle {bundle.name!r}: sampler.scheduler must be one of {SAMPLERS}, got {self.sampler!r}"
            )
        self.modalities = list(network["modalities"])
        for name, module in (("autoencoder", self.autoencoder), ("diffusion", self.diffusion)):
            _load(module, bundle, WEIGHT_FILES[name])
            module.to(self.device).eval()
        # The image must give a latent the UNet can down-sample without padding.
        self.divisor = self.autoencoder.downsample_factor * self.diffusion.divisor

    def bytes_per_window_voxel(self) -> float:
        return BYTES_PER_VOXEL  # the aldm networks less MS-SPADE: the same order

    def use_sampler(self, sampler: str) -> None:
        """Sample with ``sampler`` (one of :data:`~MedTransCore.models.aldm.sampler.SAMPLERS`).

        Raises:
            InputError: an unknown sampler name.
        """
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; model {self.bundle.name!r} offers {', '.join(SAMPLERS)}")
        self.sampler = sampler

    def translate(
        self,
        source: torch.Tensor,
        source_modality: str,
        target_modality: str,
        *,
        steps: int | None = None,
        seed: int = 0,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> torch.Tensor:
        self.check_pair(source_modality, target_modality)
        if target_modality not in self.modalities:
            raise BundleError(f"bundle {self.bundle.name!r} has no conditioning for {target_modality}")
        steps = steps if steps is not None else (self.default_steps or 10)
        report = progress or (lambda fraction: None)
        size = source.shape[2:]
        pads = []
        for s in reversed(size):  # F.pad wants the last dimension first
            # At least two voxels at the UNet's lowest level: GroupNorm needs more than one value per group.
            pads += [0, max(math.ceil(s / self.divisor), 2) * self.divisor - s]
        with torch.inference_mode():
            x = source.to(self.device, torch.float32)
            x = F.pad(x, pads, value=BACKGROUND) if any(pads) else x
            z_source = self.autoencoder.encode(x) * self.scale_factor
            report(0.1)
            target_index = torch.full((x.shape[0],), self.modalities.index(target_modality), device=self.device)
            z = sample(
                self.diffusion,
                guidance(z_source),  # the similarity mask is all ones at inference
                target_index,
                self.scheduler,
                steps,
                sampler=self.sampler,
                seed=seed,
                progress=lambda f: report(0.1 + 0.8 * f),
                cancel=cancel,
            )
            out = self.autoencoder.decode(z / self.scale_factor)
            report(1.0)
        return out[:, :, : size[0], : size[1], : size[2]].to(source.dtype)
