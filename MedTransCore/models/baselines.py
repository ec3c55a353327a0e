"""Baseline translators that need no training: the floor every model is compared against.

* ``identity``: the normalised source is the normalised target (CBCT -> CT becomes "use the CBCT as is").
* ``histogram_matching``: the source's in-body intensity quantiles are mapped onto reference quantiles of
  the target modality stored in the bundle (``histograms.safetensors``, one tensor per modality key).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import CancelFn, ProgressFn, Translator

N_QUANTILES = 201
# Normalised value of air (CT-like) and of no signal (MR).
BACKGROUND = -1.0


def quantile_levels() -> np.ndarray:
    return np.linspace(0.0, 1.0, N_QUANTILES)


def inbody_quantiles(values: np.ndarray) -> np.ndarray:
    """Quantiles (``N_QUANTILES`` levels) of normalised in-body intensities, float64."""
    return np.quantile(np.asarray(values, dtype=np.float64), quantile_levels())


def load_quantiles(bundle, filename: str = "histograms.safetensors") -> dict[str, np.ndarray]:
    """Quantiles per modality key stored in a bundle's weight file, as float64 arrays."""
    return {key: value.double().numpy() for key, value in bundle.load_weights(filename).items()}


def volume_quantiles(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """:func:`inbody_quantiles` of ``volume`` inside ``mask`` (of the whole volume when the mask is empty)."""
    values = volume[mask]
    return inbody_quantiles(values if values.size else volume.ravel())


def match_quantiles(values: np.ndarray, source_quantiles: np.ndarray, target_quantiles: np.ndarray) -> np.ndarray:
    """Map normalised ``values`` monotonically so that ``source_quantiles`` land on ``target_quantiles``.

    Args:
        values: normalised intensities, any shape.
        source_quantiles: ``(N_QUANTILES,)`` in-body quantiles of the volume ``values`` come from.
        target_quantiles: ``(N_QUANTILES,)`` reference quantiles of the target modality.

    Returns:
        float64 array of ``values``' shape.
    """
    # Quantiles of a volume with large uniform regions repeat; np.interp needs increasing x.
    src_q, idx = np.unique(source_quantiles, return_index=True)
    tgt_q = np.asarray(target_quantiles)[idx]
    # Anchor "nothing" (air / no signal, normalised -1) to itself so the background outside the body stays
    # background instead of taking the darkest in-body value.
    if src_q[0] > BACKGROUND and tgt_q[0] > BACKGROUND:
        src_q, tgt_q = np.concatenate([[BACKGROUND], src_q]), np.concatenate([[BACKGROUND], tgt_q])
    return np.interp(values, src_q, tgt_q)


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
