"""The ``aldm`` family at inference: encode, MS-SPADE, DDIM or DPM-Solver++ in latent space, decode.

Bundle layout: ``autoencoder.safetensors``, ``spade.safetensors`` and ``diffusion.safetensors``;
``metadata["network"]`` holds the exact keyword configs (see :func:`networks.build_networks`) and
``metadata["sampler"]`` the schedule, the default sampler (``scheduler``: ``"ddim"`` or ``"dpmpp"``),
``default_steps`` and the latent ``scale_factor`` (1 / std of the training latents).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...bundles import Bundle
from ...errors import BundleError, InputError
from ..base import CancelFn, ProgressFn, Translator
from .networks import build_networks
from .sampler import SAMPLERS, SCHEDULE_DEFAULTS, build_scheduler, sample

WEIGHT_FILES = {
    "autoencoder": "autoencoder.safetensors",
    "spade": "spade.safetensors",
    "diffusion": "diffusion.safetensors",
}
# Normalised value of "nothing" (air / no MR signal): padding of windows not divisible by the networks.
BACKGROUND = -1.0
# Peak bytes per window voxel for the memory guard: the default networks (float32, CPU) measured ~130 B/voxel on a
# 256x256x160 window and ~270 B/voxel (fixed costs weigh more) on 128^3, pipeline copies excluded.
BYTES_PER_VOXEL = 200.0


def _load(module: nn.Module, bundle: Bundle, filename: str) -> None:
    state = bundle.load_weights(filename)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"bundle {bundle.name!r}: {filename} does not match its network config ({exc})") from exc


class LatentDiffusionTranslator(Translator):
    """What the latent diffusion families (``aldm``, ``s2ldm``) share at inference.

    The bundle's sampler settings (:meth:`load_sampler`), the choice of sampler, padding to the networks' divisor,
    and encode -> condition -> sample -> decode (:meth:`translate`). A subclass builds ``autoencoder``,
    ``diffusion`` and ``modalities``, then calls :meth:`load_sampler` and :meth:`load_weights`, and implements
    :meth:`condition`.
    """

    stochastic = True
    #: words of the error for a target the bundle has no conditioning for.
    missing_target: str = "conditioning"

    def load_sampler(self, sampler: dict) -> None:
        """The DDIM schedule, the latent scale factor and the default sampler from ``metadata["sampler"]``.

        Raises:
            BundleError: an invalid schedule, no scale factor or an unknown sampler.
        """
        name = self.bundle.name
        try:
            self.scheduler = build_scheduler("ddim", **{k: sampler[k] for k in SCHEDULE_DEFAULTS if k in sampler})
        except ValueError as exc:
            raise BundleError(f"bundle {name!r}: invalid {self.family} configuration: {exc}") from exc
        if "scale_factor" not in sampler:
            raise BundleError(f"bundle {name!r}: sampler.scale_factor is missing")
        self.scale_factor = float(sampler["scale_factor"])
        self.sampler = sampler.get("scheduler", "ddim")
        if self.sampler not in SAMPLERS:
            raise BundleError(f"bundle {name!r}: sampler.scheduler must be one of {SAMPLERS}, got {self.sampler!r}")

    def load_weights(self, modules: dict[str, nn.Module], files: dict[str, str]) -> None:
        """Load each module's weight file (strict), move it to the device, and set the padding divisor."""
        for name, module in modules.items():
            _load(module, self.bundle, files[name])
            module.to(self.device).eval()
        # The image must give a latent the UNet can down-sample without padding.
        self.divisor = self.autoencoder.downsample_factor * self.diffusion.divisor

    def bytes_per_window_voxel(self) -> float:
        return BYTES_PER_VOXEL

    def use_sampler(self, sampler: str) -> None:
        """Sample with ``sampler`` (one of :data:`~.sampler.SAMPLERS`) instead of the bundle's default.

        Raises:
            InputError: an unknown sampler name.
        """
        if sampler not in SAMPLERS:
            raise InputError(f"unknown sampler {sampler!r}; model {self.bundle.name!r} offers {', '.join(SAMPLERS)}")
        self.sampler = sampler

    def condition(self, x: torch.Tensor, target_modality: str) -> torch.Tensor:
        """The diffusion UNet's scaled condition for the padded ``(B, 1, Z, Y, X)`` source ``x``."""
        raise NotImplementedError

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
            raise BundleError(f"bundle {self.bundle.name!r} has no {self.missing_target} for {target_modality}")
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
            condition = self.condition(x, target_modality)
            report(0.1)
            target_index = torch.full((x.shape[0],), self.modalities.index(target_modality), device=self.device)
            z = sample(
                self.diffusion,
                condition,
                target_index,
                self.scheduler,
                steps,
                sampler=self.sampler,
                seed=seed,
                progress=lambda f: report(0.1 + 0.8 * f),
                cancel=cancel,
            )
            out = self.output(x, self.autoencoder.decode(z / self.scale_factor))
            report(1.0)
        return out[:, :, : size[0], : size[1], : size[2]].to(source.dtype)

    def output(self, x: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """The translation from the padded source ``x`` and the decoded sample (default: the decoded sample)."""
        return decoded


class ALDMTranslator(LatentDiffusionTranslator):
    """Adaptive latent diffusion (seed paper 002) bound to one bundle.

    Args:
        bundle: an ``aldm`` bundle.
        device: where the networks run.
    """

    family = "aldm"
    missing_target = "MS-SPADE parameters"

    def __init__(self, bundle: Bundle, device: torch.device | str = "cpu") -> None:
        super().__init__(bundle, device)
        network = bundle.metadata["network"]
        try:
            self.autoencoder, self.spade, self.diffusion = build_networks(network)
        except ValueError as exc:
            raise BundleError(f"bundle {bundle.name!r}: invalid aldm configuration: {exc}") from exc
        self.load_sampler(bundle.metadata.get("sampler") or {})
        self.modalities = list(network["modalities"])
        modules = {"autoencoder": self.autoencoder, "spade": self.spade, "diffusion": self.diffusion}
        self.load_weights(modules, WEIGHT_FILES)

    def condition(self, x: torch.Tensor, target_modality: str) -> torch.Tensor:
        # MS-SPADE works on unscaled latents (as trained); the diffusion UNet sees everything scaled.
        z_source = self.autoencoder.encode(x)
        return torch.cat([z_source, self.spade(z_source, target_modality)], dim=1) * self.scale_factor
