"""The ``vid2vid`` generator: CBCT -> CT as video-to-video translation along the axial slice sequence (seed 001).

The axial slices of a volume are the frames of a video. Each output slice ``y_t`` is predicted by a 2D MONAI
``BasicUNet`` from

* the source slice ``x_t`` and its ``context`` neighbours on each side (``2 * context + 1`` channels), and
* the ``previous`` slices this generator produced before it (``y_{t-1}``, ``y_{t-2}``, ...), each with a constant
  0/1 flag channel saying whether that slice exists,

as a residual over the source slice: ``y_t = x_t + net(...)``, with the last convolution zero-initialised so an
untrained generator is the identity map (a CBCT already is a rough CT).

Choices (and why):

* First slices: a missing previous slice is the background value with its flag at 0 ("no previous"), never the
  ground truth. Inference has no ground truth, so the start of a volume must be a state training has seen: a
  training clip starts the same way, and :meth:`Vid2VidGenerator.step` applies the rule for both.
* No flow warping: vid2vid warps the previous frame with optical flow because video content *moves*. Axial
  slices 1-3 mm apart of a static head do not move in-plane; they change through-plane (structures appear and
  vanish), which no flow field describes. A classical flow (Farneback, Horn-Schunck) between such slices is
  close to zero in the body and noise-driven elsewhere (CBCT streaks), so it would add artefacts, not alignment;
  the generator's receptive field absorbs the few-voxel drift of oblique edges. No pretrained flow network is
  available offline either.
* ``upsample="nontrainable"`` (convolution then bilinear interpolation) by default: transposed convolutions
  leave a checkerboard that the autoregression feeds back slice after slice (``"deconv"`` stays selectable).
* Instance norm by default. With batch norm (batches of 4 clips) the trained generator leaned on the batch
  statistics and carried a +66 HU bias in eval mode, where running statistics replace them (validation MAE 87 HU
  against the CBCT's own 77 HU); with instance norm it reached 30 HU on the same cases. The residual path keeps
  the absolute level, so instance norm removing it inside the network costs nothing on a water-calibrated CBCT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet
from torch import nn

from .unet import BACKGROUND

__all__ = ["UPSAMPLE_MODES", "Vid2VidGenerator", "build_vid2vid"]

UPSAMPLE_MODES = ("nontrainable", "deconv", "pixelshuffle")
#: BasicUNet down-samples four times.
DIVISOR = 16
#: In-plane sizes are padded to at least this: instance norm needs more than one voxel at the deepest level.
MIN_SIDE = 2 * DIVISOR


class Vid2VidGenerator(nn.Module):
    """A 2D residual generator over slices, conditioned on neighbouring source slices and its own previous outputs.

    Args:
        context: source neighbours on each side of the translated slice.
        previous: previously generated slices fed back.
        features: the six feature widths of MONAI's ``BasicUNet``.
        norm: normalisation layer name (``"batch"``, ``"instance"``) or ``None``.
        upsample: ``"nontrainable"``, ``"deconv"`` or ``"pixelshuffle"``.
        dropout: dropout probability.
    """

    def __init__(
        self,
        context: int,
        previous: int,
        features: Sequence[int],
        norm: str | None,
        upsample: str,
        dropout: float,
    ) -> None:
        super().__init__()
        self.context, self.previous = context, previous
        in_channels = 2 * context + 1 + 2 * previous  # source stack, previous slices, their flags
        norm_layer = (norm, {"affine": True}) if norm else None
        self.backbone = BasicUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=1,
            features=tuple(features),
            norm=norm_layer,
            dropout=dropout,
            upsample=upsample,
        )
        # Zero residual: the untrained generator returns the source slice.
        nn.init.zeros_(self.backbone.final_conv.weight)
        nn.init.zeros_(self.backbone.final_conv.bias)

    def step(self, sources: torch.Tensor, generated: Sequence[torch.Tensor]) -> torch.Tensor:
        """Translate one slice given the slices generated before it (the one rule training and inference share).

        Args:
            sources: ``(B, 2 * context + 1, H, W)`` normalised source slices, the translated one in the middle.
            generated: the slices generated so far, oldest first, each ``(B, 1, H, W)``; only the last
                ``previous`` are read, and fewer (the start of a sequence) leave "no previous" slots.

        Returns:
            ``(B, 1, H, W)`` the normalised target slice.
        """
        depth = 2 * self.context + 1
        if sources.ndim != 4 or sources.shape[1] != depth:
            raise ValueError(f"sources must be (B, {depth}, H, W), got {tuple(sources.shape)}")
        batch, _, height, width = sources.shape
        recent = list(generated)[::-1][: self.previous]  # most recent first
        history = torch.full(
            (batch, self.previous, height, width), BACKGROUND, dtype=sources.dtype, device=sources.device
        )
        flags = torch.zeros_like(history)
        for slot, slice_ in enumerate(recent):
            if slice_.shape != (batch, 1, height, width):
                raise ValueError(
                    f"a generated slice must be ({batch}, 1, {height}, {width}), got {tuple(slice_.shape)}"
                )
            history[:, slot] = slice_[:, 0]
            flags[:, slot] = 1.0
        x = torch.cat([sources, history, flags], 1)
        pad_h = max(math.ceil(height / DIVISOR) * DIVISOR, MIN_SIDE) - height
        pad_w = max(math.ceil(width / DIVISOR) * DIVISOR, MIN_SIDE) - width
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        residual = self.backbone(x)[:, :, :height, :width]
        return sources[:, self.context : self.context + 1] + residual

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Generate a sequence autoregressively from "no previous" (one call per backward: DDP-friendly).

        Args:
            clip: ``(B, N + 2 * context, H, W)`` consecutive normalised source slices.

        Returns:
            ``(B, N, H, W)``: slices ``context .. N + context - 1`` of the clip translated in order, each fed
            the ones generated before it (gradients flow through the history).
        """
        frames = clip.shape[1] - 2 * self.context
        if clip.ndim != 4 or frames < 1:
            raise ValueError(f"clip must be (B, N + {2 * self.context}, H, W) with N >= 1, got {tuple(clip.shape)}")
        generated: list[torch.Tensor] = []
        for t in range(frames):
            generated.append(self.step(clip[:, t : t + 2 * self.context + 1], generated))
        return torch.cat(generated, 1)


def build_vid2vid(
    *,
    context: int = 2,
    previous: int = 2,
    features: Sequence[int] = (16, 16, 32, 64, 128, 16),
    norm: str | None = "instance",
    upsample: str = "nontrainable",
    dropout: float = 0.0,
) -> Vid2VidGenerator:
    """Build the generator from its keyword config (the bundle's ``network`` field).

    Args:
        context: source neighbours on each side of the translated slice (0 = the slice alone).
        previous: previously generated slices fed back (0 = no autoregression: a plain 2.5D network).
        features: six feature widths of MONAI's ``BasicUNet`` (four levels down, ``features[5]`` at the output).
        norm: ``"batch"``, ``"instance"`` or ``None``.
        upsample: ``"nontrainable"`` (no checkerboard), ``"deconv"`` or ``"pixelshuffle"``.
        dropout: dropout probability in ``[0, 1)``.

    Raises:
        ValueError: an inconsistent or unknown setting.
    """
    if not isinstance(context, int) or isinstance(context, bool) or not 0 <= context <= 8:
        raise ValueError(f"context must be an int in [0, 8], got {context!r}")
    if not isinstance(previous, int) or isinstance(previous, bool) or not 0 <= previous <= 8:
        raise ValueError(f"previous must be an int in [0, 8], got {previous!r}")
    if len(features) != 6 or any(not isinstance(f, int) or f < 1 for f in features):
        raise ValueError(f"features must be six positive ints (BasicUNet), got {list(features)}")
    if norm not in (None, "batch", "instance"):
        raise ValueError(f"norm must be 'batch', 'instance' or None, got {norm!r}")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {list(UPSAMPLE_MODES)}, got {upsample!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return Vid2VidGenerator(context, previous, list(features), norm, upsample, dropout)
