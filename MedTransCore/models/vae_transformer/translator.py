"""The ``vae_transformer`` family at inference: encode every source, transformer in latent space, decode.

Bundle layout: ``autoencoder.safetensors`` (the shared KL autoencoder; after stage 3 its decoder is the fine-tuned
one) and ``transformer.safetensors``. ``metadata["network"]`` holds ``modalities``, the exact ``autoencoder`` and
``transformer`` keyword configs and ``scale_factor`` (1 / std of the training latents). Deterministic: no
sampling, no seed.

The volume is encoded once (in large blended tiles, :data:`TILE`, which bound the memory of a big volume), the
transformer slides over the latent volume in its own window (its latent ``grid``) with overlapping,
Gaussian-blended windows, and the predicted latents are decoded once (in the same tiles). Training encodes whole
cases and takes random latent windows, so this is also the inference that matches it. Bundles exported since write
``grid: null`` (the pipeline hands over the whole volume); an older bundle's image-space ``grid`` still works, each
window then being encoded on its own (measured on ``phantom-head-vae-transformer``: a 128^3 grid took 96 s that way,
most of it re-encoding overlapping windows).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...bundles import Bundle
from ...errors import BundleError
from ...preprocess import run_sliding_windows
from ..aldm.networks import build_autoencoder
from ..aldm.translator import BACKGROUND
from ..base import CancelFn, ProgressFn, Translator, check_cancel
from .network import build_transformer

WEIGHT_FILES = {"autoencoder": "autoencoder.safetensors", "transformer": "transformer.safetensors"}
# Peak bytes per voxel for the memory guard: the KL decoder's full-resolution activations dominate
# (16 channels, float32, a few alive at once), measured at ~250 B/voxel on a 48^3 volume of the default networks.
# Counted over the whole volume, it over-estimates volumes larger than one TILE (the guard errs on the safe side).
BYTES_PER_VOXEL = 320.0
# The autoencoder's tile in image voxels (z, y, x): a 128^3 volume is one tile (no encoder work repeated), and a
# tile's activations stay near 1 GB. A multiple of every down-sampling factor, with TILE_OVERLAP giving a
# factor-aligned stride (96), so tiles map onto whole latents. Measured with 96^3 tiles: 128^3 took 8 tiles, 39 s.
TILE = (128, 128, 128)
TILE_OVERLAP = 0.25
# Overlap of the transformer's latent windows: they are cheap (a 12^3 latent window is 216 tokens), and a large
# overlap hides the token grid where neighbouring windows disagree.
LATENT_OVERLAP = 0.5


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
        self.latent_grid = tuple(self.transformer.grid)

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
        """Translate one or several co-registered sources (``steps`` and ``seed`` are unused).

        Args:
            sources: ``(B, S, Z, Y, X)`` normalised sources, any size (the whole volume, or one window of an older
                bundle's grid).
            source_modalities: ``S`` registry keys, distinct.
            target_modality, progress, cancel: as :meth:`Translator.translate`.

        Returns:
            ``(B, 1, Z, Y, X)`` normalised target intensities.
        """
        if sources.shape[1] != len(source_modalities):
            raise ValueError(f"{sources.shape[1]} source channels but {len(source_modalities)} modalities")
        self.check_sources(source_modalities, target_modality)
        report = progress or (lambda fraction: None)
        b, s = sources.shape[:2]
        size = tuple(sources.shape[2:])
        factor = self.autoencoder.downsample_factor
        # Padded with background to a multiple of the down-sampling and to at least one transformer window.
        padded = [max(g * factor, math.ceil(e / factor) * factor) for e, g in zip(size, self.latent_grid, strict=True)]
        pads = []
        for edge, full in zip(reversed(size), reversed(padded), strict=True):  # F.pad: last axis first
            pads += [0, full - edge]
        index = torch.tensor([self.modalities.index(m) for m in source_modalities], device=self.device)
        target = torch.full((1,), self.modalities.index(target_modality), device=self.device)
        present = torch.ones(1, s, dtype=torch.bool, device=self.device)

        def predict(window: torch.Tensor) -> torch.Tensor:  # (1, S * C, *grid) -> (1, C, *grid)
            latents = window.reshape(1, s, -1, *window.shape[2:])
            return self.transformer(latents, index[None], present, target)

        with torch.inference_mode():
            x = F.pad(sources.to(self.device, torch.float32), pads, value=BACKGROUND).reshape(b * s, 1, *padded)
            latents = self._in_tiles(self.autoencoder.encode, x, TILE, cancel) * self.scale_factor
            del x
            report(0.3)
            check_cancel(cancel)
            latents = latents.reshape(b, s * latents.shape[1], *latents.shape[2:])
            predicted = run_sliding_windows(
                latents,
                self.latent_grid,
                predict,
                overlap=LATENT_OVERLAP,
                progress=lambda fraction: report(0.3 + 0.3 * fraction),
                cancel=cancel,
            )
            del latents
            check_cancel(cancel)
            tile = tuple(t // factor for t in TILE)
            out = self._in_tiles(self.autoencoder.decode, predicted / self.scale_factor, tile, cancel)
            report(1.0)
        return out[:, :, : size[0], : size[1], : size[2]].to(sources.dtype)

    @staticmethod
    def _in_tiles(fn, volume: torch.Tensor, tile: Sequence[int], cancel: CancelFn | None) -> torch.Tensor:
        """``fn`` (the encoder or the decoder: outputs scaled by the down-sampling) over blended tiles of ``volume``.

        Args:
            volume: ``(B, C, Z, Y, X)``, every axis a multiple of the autoencoder's down-sampling.
            tile: ``(Z, Y, X)`` tile on ``volume``'s grid; an axis shorter than it is taken whole.
        """
        window = [min(t, n) for t, n in zip(tile, volume.shape[2:], strict=True)]
        return run_sliding_windows(volume, window, fn, overlap=TILE_OVERLAP, cancel=cancel)
