"""The one interface every model family implements.

A translator works on *normalised* tensors on the model's grid; reading, resampling, sliding windows,
normalisation and writing are the pipeline's job (``MedTransCore.translate``), so a family only maps a
source window to a target window.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..bundles import Bundle
from ..errors import CancelledError, InputError

ProgressFn = Callable[[float], None]
CancelFn = Callable[[], bool]


def check_cancel(cancel: CancelFn | None) -> None:
    """Raise ``CancelledError`` when the caller asked to stop."""
    if cancel is not None and cancel():
        raise CancelledError("translation cancelled")


class Translator(ABC):
    """A model family bound to one bundle.

    Args:
        bundle: the loaded bundle (weights are read from it by the subclass).
        device: where the network runs.
    """

    #: registry name, equal to the bundle's ``family`` field.
    family: str = ""
    #: dtype of the tensors the pipeline hands in (baselines use float64 for exact round trips).
    dtype: torch.dtype = torch.float32
    #: True when repeated sampling with different seeds gives different results (uncertainty maps).
    stochastic: bool = False
    #: the sampler a diffusion family runs (``None`` for the others); see :meth:`use_sampler`.
    sampler: str | None = None
    #: True when the family takes several co-registered sources at once (:meth:`translate_sources`).
    multi_source: bool = False

    def __init__(self, bundle: Bundle, device: torch.device | str = "cpu") -> None:
        self.bundle = bundle
        self.device = torch.device(device)

    def check_pair(self, source_modality: str, target_modality: str) -> None:
        if not self.bundle.supports(source_modality, target_modality):
            pairs = ", ".join(f"{s}->{t}" for s, t in self.bundle.pairs)
            raise InputError(
                f"model {self.bundle.name!r} does not support {source_modality}->{target_modality}; it supports: {pairs}"
            )

    def check_sources(self, source_modalities: Sequence[str], target_modality: str) -> None:
        """Raise ``InputError`` unless the bundle lists this set of sources for the target."""
        if len(source_modalities) == 1:
            self.check_pair(source_modalities[0], target_modality)
            return
        if not self.multi_source:
            raise InputError(
                f"model {self.bundle.name!r} ({self.family}) takes one source; got {', '.join(source_modalities)}"
            )
        if not self.bundle.supports_sources(source_modalities, target_modality):
            raise InputError(
                f"model {self.bundle.name!r} does not list {' + '.join(source_modalities)} -> {target_modality}"
            )

    @property
    def default_steps(self) -> int | None:
        sampler = self.bundle.metadata.get("sampler") or {}
        return sampler.get("default_steps")

    def use_sampler(self, sampler: str) -> None:
        """Choose a diffusion family's sampler (``--sampler``); the others have none and ignore it, like ``steps``."""

    def prepare(self, source: torch.Tensor, mask: torch.Tensor, source_modality: str, target_modality: str) -> None:
        """Called once with the whole normalised volume before any window is translated.

        Args:
            source: ``(1, 1, Z, Y, X)`` the whole normalised source on the model's spacing.
            mask: ``(1, 1, Z, Y, X)`` boolean body mask on the same grid.

        Families that need volume-level statistics (histogram matching) override it; the default does nothing.
        """

    def pointwise_base(self, source: np.ndarray, target_modality: str) -> np.ndarray | None:
        """A voxel-wise map of the normalised source into the target's intensities that the model refines, if any.

        When a family has one (a histogram-standardised residual ``unet``), ``translate_image`` keeps the
        source's own resolution: the result on the source grid is this base computed there plus the model's
        correction (its output minus the base on the model grid) resampled. Call after :meth:`prepare`.

        Args:
            source: normalised source intensities, any shape, on any grid.
            target_modality: registry key of the target.

        Returns:
            float64 array of ``source``'s shape, or ``None`` (the default: the output is resampled as is).
        """
        return None

    def bytes_per_window_voxel(self) -> float:
        """Rough peak memory per voxel of one window, its output included, for the memory guard.

        The default suits a voxel-wise map (a float64 output and a temporary); networks override it. The guard
        runs before the model is built (:meth:`window_bytes_per_voxel`), so an override may use ``self.bundle``
        but nothing a subclass's ``__init__`` sets.
        """
        return 12.0

    @classmethod
    def window_bytes_per_voxel(cls, bundle: Bundle) -> float:
        """:meth:`bytes_per_window_voxel` from the bundle's metadata alone, without loading any weight."""
        probe = cls.__new__(cls)
        Translator.__init__(probe, bundle)
        return float(probe.bytes_per_window_voxel())

    @classmethod
    def refines_pointwise_base(cls) -> bool:
        """Whether the family may refine a voxel-wise base (:meth:`pointwise_base`); the memory guard counts it."""
        return cls.pointwise_base is not Translator.pointwise_base

    @abstractmethod
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
        """Translate one normalised window.

        Args:
            source: ``(B, 1, Z, Y, X)`` normalised source intensities on the model's grid, on ``self.device``.
            source_modality: registry key of the source.
            target_modality: registry key of the target.
            steps: sampler steps (diffusion families); ``None`` = the bundle's default.
            seed: seed of any random sampling (same seed, same result).
            progress: called with a fraction in ``[0, 1]`` of this window's work.
            cancel: polled between steps; when it returns True, raise ``CancelledError``.

        Returns:
            ``(B, 1, Z, Y, X)`` normalised target intensities.
        """

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
        """Translate one window of one or several co-registered sources (what the pipeline calls).

        Args:
            sources: ``(B, C, Z, Y, X)`` normalised sources on the model's grid, channel ``c`` holding
                ``source_modalities[c]``.
            source_modalities: ``C`` registry keys, distinct.
            target_modality, steps, seed, progress, cancel: as :meth:`translate`.

        Returns:
            ``(B, 1, Z, Y, X)`` normalised target intensities.

        Single-source families keep implementing :meth:`translate` only; multi-source families
        (``multi_source = True``) override this method.
        """
        if sources.shape[1] != len(source_modalities):
            raise ValueError(f"{sources.shape[1]} source channels but {len(source_modalities)} modalities")
        self.check_sources(source_modalities, target_modality)
        return self.translate(
            sources,
            source_modalities[0],
            target_modality,
            steps=steps,
            seed=seed,
            progress=progress,
            cancel=cancel,
        )
