"""Baseline translators that need no training: the floor every model is compared against.

* ``identity``: the normalised source is the normalised target (CBCT -> CT becomes "use the CBCT as is").
* ``histogram_matching``: the source's in-body intensity quantiles are mapped onto reference quantiles of
  the target modality stored in the bundle (``histograms.safetensors``, one tensor per modality key).
"""

from __future__ import annotations

import numpy as np
import torch

from ..quantiles import BACKGROUND, N_QUANTILES, inbody_quantiles, match_quantiles, quantile_levels, volume_quantiles
from .base import CancelFn, ProgressFn, Translator

# The quantile helpers moved to MedTransCore.quantiles (numpy only); re-exported for the models and trainers.
__all__ = [
    "BACKGROUND",
    "HistogramMatchingTranslator",
    "IdentityTranslator",
    "N_QUANTILES",
    "inbody_quantiles",
    "load_quantiles",
    "match_quantiles",
    "quantile_levels",
    "volume_quantiles",
]


def load_quantiles(bundle, filename: str = "histograms.safetensors") -> dict[str, np.ndarray]:
    """Quantiles per modality key stored in a bundle's weight file, as float64 arrays."""
    return {key: value.double().numpy() for key, value in bundle.load_weights(filename).items()}


class IdentityTranslator(Translator):
    """Returns the source unchanged (in normalised units)."""

    family = "identity"
    dtype = torch.float64

    def translate(self, source, source_modality, target_modality, *, steps=None, seed=0, progress=None, cancel=None):
        self.check_pair(source_modality, target_modality)
        if progress is not None:
            progress(1.0)
        return source.clone()


class HistogramMatchingTranslator(Translator):
    """Monotone intensity mapping of the source's in-body histogram onto the target's reference histogram."""

    family = "histogram_matching"
    dtype = torch.float64

    def __init__(self, bundle, device="cpu") -> None:
        super().__init__(bundle, device)
        self.reference = load_quantiles(bundle)
        self._source_quantiles: np.ndarray | None = None

    def prepare(self, source, mask, source_modality, target_modality) -> None:
        self._source_quantiles = volume_quantiles(source.cpu().numpy(), mask.cpu().numpy())

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
        src_q = self._source_quantiles
        if src_q is None:  # called without prepare(): use the bundle's source histogram
            src_q = self.reference[source_modality]
        mapped = match_quantiles(source.cpu().numpy(), src_q, self.reference[target_modality])
        if progress is not None:
            progress(1.0)
        return torch.from_numpy(mapped).to(source.device, source.dtype)
