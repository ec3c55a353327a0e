"""The VAE + bidirectional-transformer family (seed 000): any-to-any translation in one shared latent space."""

from .network import LatentTransformer, build_transformer, resolve_transformer_config
from .translator import VAETransformerTranslator

__all__ = ["LatentTransformer", "VAETransformerTranslator", "build_transformer", "resolve_transformer_config"]
