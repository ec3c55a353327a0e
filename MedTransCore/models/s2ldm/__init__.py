"""The ``s2ldm`` family: similarity-aware syncretic latent diffusion, NCCT -> CECT (Zhu et al., seed paper 004)."""

from .networks import (
    SimilarityGuidedUNet,
    SyncreticAutoencoder,
    adaptive_similarity_loss,
    build_diffusion,
    build_networks,
    build_syncretic_autoencoder,
    feature_similarity,
    guidance,
    high_frequency_enhance,
    mask_schedule,
    rescaled_similarity,
    similarity_mask,
)
from .translator import S2LDMTranslator

__all__ = [
    "S2LDMTranslator",
    "SimilarityGuidedUNet",
    "SyncreticAutoencoder",
    "adaptive_similarity_loss",
    "build_diffusion",
    "build_networks",
    "build_syncretic_autoencoder",
    "feature_similarity",
    "guidance",
    "high_frequency_enhance",
    "mask_schedule",
    "rescaled_similarity",
    "similarity_mask",
]
