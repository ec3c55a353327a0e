"""The ``vid2vid`` family: CBCT -> CT translated slice by slice along the axial axis, each slice fed the ones the
model generated before it (seed 001, Fan et al. 2022). The generator and its design choices are in
:mod:`~MedTransCore.models.vid2vid_network`; this module runs a trained bundle.

The bundle has no grid (``"grid": null``): the pipeline hands the whole volume as one window, and the translator
walks its z axis in order as one sequence, starting from "no previous" exactly like a training clip.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import CancelFn, ProgressFn, Translator, check_cancel
from .slice_unet import signal_box, slice_stack
from .unet import BACKGROUND
from .vid2vid_network import DIVISOR, Vid2VidGenerator, build_vid2vid

__all__ = ["Vid2VidTranslator", "build_vid2vid", "translate_sequence"]

#: Progress and cancellation are checked every this many slices.
REPORT_EVERY = 4


def translate_sequence(
    network: Vid2VidGenerator,
    volume: torch.Tensor,
    *,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> torch.Tensor:
    """Translate one volume slice by slice along z, autoregressively (only the box holding signal).

    Args:
        network: the generator (in eval mode).
        volume: ``(Z, Y, X)`` normalised source.
        device: where the network runs.
        progress: called with the fraction of slices done (every :data:`REPORT_EVERY` slices and at the end).
        cancel: polled every :data:`REPORT_EVERY` slices.

    Returns:
        ``(Z, Y, X)`` normalised target; the background value outside the signal box.
    """
    out = torch.full_like(volume, BACKGROUND, dtype=torch.float32)
    box = signal_box(volume[None], DIVISOR)
    if box is None:
        if progress is not None:
            progress(1.0)
        return out
    zs, ys, xs = box
    cropped = volume[None, :, ys, xs].float()  # (1, Z, h, w)
    generated: list[torch.Tensor] = []
    count = zs.stop - zs.start
    for index, z in enumerate(range(zs.start, zs.stop)):
        if index % REPORT_EVERY == 0:
            check_cancel(cancel)
            if progress is not None and index:
                progress(index / count)
        # Edge slices are replicated, as the training sampler does at the ends of a volume.
        sources = slice_stack(cropped, z, z + 1, network.context)[:, 0].to(device)  # (1, 2k+1, h, w)
        predicted = network.step(sources, generated)
        generated = [*generated, predicted][-network.previous :] if network.previous else []
        out[z, ys, xs] = predicted[0, 0].to(out.device)
    if progress is not None:
        progress(1.0)
    return out


class Vid2VidTranslator(Translator):
    """Runs a trained ``vid2vid`` bundle: weights ``model.safetensors``, config in ``metadata["network"]``."""

    family = "vid2vid"

    def __init__(self, bundle, device: torch.device | str = "cpu") -> None:
        super().__init__(bundle, device)
        config: dict[str, Any] = dict(bundle.metadata["network"])
        self.network = build_vid2vid(**config)
        self.network.load_state_dict(bundle.load_weights("model.safetensors"))
        self.network.to(self.device).eval()

    def bytes_per_window_voxel(self) -> float:
        # The whole volume is one window: its float32 input, the cropped copy and the output dominate; one slice's
        # activations are small next to them.
        return 4.0 * 3

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
        # Nothing below the background, as in training (HU below -1024 are clamped by the data too).
        volume = source.float().clamp(min=BACKGROUND)
        batch = volume.shape[0]
        outputs = []
        with torch.no_grad():
            for b in range(batch):
                inner = None
                if progress is not None:
                    inner = lambda f, b=b: progress((b + f) / batch)  # noqa: E731
                outputs.append(
                    translate_sequence(self.network, volume[b, 0], device=self.device, progress=inner, cancel=cancel)
                )
        return torch.stack(outputs)[:, None].to(source.device)
