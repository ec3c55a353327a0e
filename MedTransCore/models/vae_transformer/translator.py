"""The ``vae_transformer`` family at inference: encode every source, transformer in latent space, decode.

Bundle layout: ``autoencoder.safetensors`` (the shared KL autoencoder; after stage 3 its decoder is the fine-tuned
one) and ``transformer.safetensors``. ``metadata["network"]`` holds ``modalities``, the exact ``autoencoder`` and
``transformer`` keyword configs and ``scale_factor`` (1 / std of the training latents). ``metadata["grid"]`` is the
window in image voxels (``x, y, z``): the transformer's latent window times the autoencoder's down-sampling, so the
pipeline's overlapping sliding windows cover any volume. Deterministic: no sampling, no seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...bundles import Bundle
from ...errors import BundleError, InputError
from ..aldm.networks import build_autoencoder
from ..aldm.translator import BACKGROUND
from ..base import CancelFn, ProgressFn, Translator, check_cancel
from .network import build_transformer

WEIGHT_FILES = {"autoencoder": "autoencoder.safetensors", "transformer": "transformer.safetensors"}
# Peak bytes per window voxel for the memory guard: the KL decoder's full-resolution activations dominate
# (16 channels, float32, a few alive at once), measured at ~250 B/voxel on a 48^3 window of the default networks.
BYTES_PER_VOXEL = 320.0


class VAETransformerTranslator(Translator):
    """Shared KL autoencoder + bidirectional latent transformer (seed paper 000) bound to one bundle.

    Args:
        bundle: a ``vae_transformer`` bundle.
        device: where the networks run.
    """

    family = "vae_transformer"
    multi_source = True

    def __init__(self, bundle: Bundle, device: torch.device | str = "cpu") -> None:
        super().__init__(bundle, device)
        network = bundle.metadata["network"]
        try:
            self.modalities = list(network["modalities"])
            autoencoder = dict(network["autoencoder"])
            self.autoencoder = build_autoencoder(autoencoder.pop("kind"), **autoencoder)
            self.transformer = build_transformer(
                latent_channels=self.autoencoder.latent_channels, modalities=self.modalities, **network["transformer"]
            )
            self.scale_factor = float(network["scale_factor"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle {bundle.name!r}: invalid vae_transformer configuration: {exc}") from exc
        for name, module in (("autoencoder", self.autoencoder), ("transformer", self.transformer)):
            try:
                module.load_state_dict(bundle.load_weights(WEIGHT_FILES[name]), strict=True)
            except RuntimeError as exc:
                raise BundleError(f"bundle {bundle.name!r}: {WEIGHT_FILES[name]} does not match its config") from exc
            module.to(self.device).eval()
        self.window = tuple(g * self.autoencoder.downsample_factor for g in self.transformer.grid)

    def bytes_per_window_voxel(self) -> float:
        return BYTES_PER_VOXEL

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
        return self.translate_sources(
            source, [source_modality], target_modality, steps=steps, seed=seed, progress=progress, cancel=cancel
        )

    def translate_sources(
        self,
        sources: torch.Tensor,
        source_modalities: Sequence[str],
        target_modality: str,
        *,
        steps: int | None = None,
        seed: int = 0,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> torch.Tensor:
        """Translate one window of one or several co-registered sources (``steps`` and ``seed`` are unused).

        Args:
            sources: ``(B, S, Z, Y, X)`` normalised sources, each axis at most the bundle's window.
            source_modalities: ``S`` registry keys, distinct.
            target_modality, progress, cancel: as :meth:`Translator.translate`.

        Returns:
            ``(B, 1, Z, Y, X)`` normalised target intensities.
        """
        if sources.shape[1] != len(source_modalities):
            raise ValueError(f"{sources.shape[1]} source channels but {len(source_modalities)} modalities")
        self.check_sources(source_modalities, target_modality)
        size = tuple(sources.shape[2:])
        if any(s > w for s, w in zip(size, self.window, strict=True)):
            raise InputError(f"a {size} window is larger than model {self.bundle.name!r}'s window {self.window}")
        report = progress or (lambda fraction: None)
        b, s = sources.shape[:2]
        pads = []
        for edge, window in zip(reversed(size), reversed(self.window), strict=True):  # F.pad: last axis first
            pads += [0, window - edge]
        index = torch.tensor([self.modalities.index(m) for m in source_modalities], device=self.device)
        target = torch.full((b,), self.modalities.index(target_modality), device=self.device)
        with torch.inference_mode():
            x = F.pad(sources.to(self.device, torch.float32), pads, value=BACKGROUND)
            latents = self.autoencoder.encode(x.reshape(b * s, 1, *self.window)) * self.scale_factor
            report(0.4)
            check_cancel(cancel)
            latents = latents.reshape(b, s, *latents.shape[1:])
            present = torch.ones(b, s, dtype=torch.bool, device=self.device)
            predicted = self.transformer(latents, index.expand(b, s), present, target)
            report(0.6)
            check_cancel(cancel)
            out = self.autoencoder.decode(predicted / self.scale_factor)
            report(1.0)
        return out[:, :, : size[0], : size[1], : size[2]].to(sources.dtype)
