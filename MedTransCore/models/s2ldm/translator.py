"""The ``s2ldm`` family at inference: encode the NCCT, sample the CECT latent with an all-ones mask, decode.

Bundle layout: ``autoencoder.safetensors`` (the syncretic autoencoder's weights, loaded into a plain
``aldm`` autoencoder: only the NCCT is encoded here) and ``diffusion.safetensors`` (the
:class:`~.networks.SimilarityGuidedUNet`). ``metadata["network"]`` holds ``modalities`` (the target conditioning
order) and the exact ``autoencoder`` and ``diffusion`` keyword configs; ``metadata["sampler"]`` the schedule, the
default sampler (``ddim`` or ``dpmpp``, ``aldm``'s loops), ``default_steps`` and the latent ``scale_factor``.
"""

from __future__ import annotations

import torch

from ...bundles import Bundle
from ...errors import BundleError
from ..aldm.translator import LatentDiffusionTranslator
from .networks import build_networks, guidance

WEIGHT_FILES = {"autoencoder": "autoencoder.safetensors", "diffusion": "diffusion.safetensors"}


class S2LDMTranslator(LatentDiffusionTranslator):
    """Similarity-aware syncretic latent diffusion (seed paper 004) bound to one bundle.

    Args:
        bundle: an ``s2ldm`` bundle.
        device: where the networks run.
    """

    family = "s2ldm"

    def __init__(self, bundle: Bundle, device: torch.device | str = "cpu") -> None:
        super().__init__(bundle, device)
        network = bundle.metadata["network"]
        try:
            self.autoencoder, self.diffusion = build_networks(network)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle {bundle.name!r}: invalid s2ldm configuration: {exc}") from exc
        self.load_sampler(bundle.metadata.get("sampler") or {})
        self.modalities = list(network["modalities"])
        self.load_weights({"autoencoder": self.autoencoder, "diffusion": self.diffusion}, WEIGHT_FILES)

    def condition(self, x: torch.Tensor, target_modality: str) -> torch.Tensor:
        # Only the NCCT is encoded; the similarity mask is all ones at inference.
        return guidance(self.autoencoder.encode(x) * self.scale_factor)
