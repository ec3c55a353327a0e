"""The ``slice_unet`` family: a 2.5D UNet over axial slices that takes any subset of its bundle's sequences.

Why slices: with a handful of real subjects, every axial slice is a training sample at the native 1 mm
resolution (the pix2pix / BraSyn standard), where a 3D network sees a few dozen coarse patches. Each output slice
sees ``context`` neighbouring slices on either side of every input sequence, so anatomy across slices informs it;
whole slices are translated at once, so no window seams exist in-plane, and neighbouring slices share their
inputs, so none show across slices either.

Inputs: one group of ``2 * context + 1`` channels per modality of ``input_modalities``; a sequence the request
does not have is filled with the background value. Which sequences are present is a binary code that modulates
every normalisation layer (FiLM, :class:`~MedTransCore.models.unet.FiLMNorm`), so one network trained with random
sequence dropout serves every subset: T1 alone, or T1 + T1c + FLAIR. Outputs: one channel per modality of
``modalities``; the request's target selects its channel.

Up-sampling: MONAI's ``UNet`` up-samples with stride-2 transposed convolutions, whose 3x3 kernels overlap unevenly
and leave a faint grid on smooth regions (the checkerboard of Odena et al., 2016). ``upsample="deconv_blur"``
follows each with a fixed binomial blur that cancels that grid (:class:`BlurredConvTranspose2d`). It is a choice for
training from scratch: the top layer's transposed convolution carries the output's finest detail, so blurring the
layers of a network trained without the blur changes its output entirely (fine-tuning one did not recover).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

from ..modalities import BRAIN_LOW_VALUE
from .base import CancelFn, ProgressFn, Translator, check_cancel
from .baselines import load_quantiles, match_quantiles, volume_quantiles
from .unet import BACKGROUND, _add_film, _Condition

__all__ = [
    "BlurredConvTranspose2d",
    "SliceUNet",
    "SliceUNetTranslator",
    "build_slice_unet",
    "signal_box",
    "slice_stack",
]

UPSAMPLE_MODES = ("deconv", "deconv_blur")


class BlurredConvTranspose2d(nn.ConvTranspose2d):
    """A stride-2 transposed convolution followed by a fixed binomial ``[1, 2, 1] / 4`` blur in each axis.

    A 3x3 kernel at stride 2 reaches even and odd output pixels with different taps: a period-2 grid that the
    layers above magnify into a checkerboard. The binomial filter has a zero at that frequency, so the grid
    cannot form. The parameters (names and shapes) are the transposed convolution's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.stride != (2, 2):
            raise ValueError(f"the blur cancels the grid of stride 2 only, got stride {self.stride}")
        binomial = torch.tensor([1.0, 2.0, 1.0]) / 4
        self.register_buffer("blur", torch.outer(binomial, binomial)[None, None], persistent=False)

    @classmethod
    def replacing(cls, deconv: nn.ConvTranspose2d) -> BlurredConvTranspose2d:
        """A blurred copy of ``deconv`` (same configuration and weights)."""
        layer = cls(
            deconv.in_channels,
            deconv.out_channels,
            deconv.kernel_size,
            stride=deconv.stride,
            padding=deconv.padding,
            output_padding=deconv.output_padding,
            groups=deconv.groups,
            bias=deconv.bias is not None,
            dilation=deconv.dilation,
        )
        layer.load_state_dict(deconv.state_dict())
        return layer

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, C_out, 2H, 2W)`` (with MONAI's padding), blurred channel by channel."""
        y = super().forward(x, output_size)
        channels = y.shape[1]
        y = F.pad(y, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(y, self.blur.to(y.dtype).expand(channels, 1, 3, 3), groups=channels)


def _blur_deconvs(module: nn.Module) -> None:
    """Replace every transposed convolution inside ``module`` by a :class:`BlurredConvTranspose2d`, in place."""
    for name, child in module.named_children():
        if isinstance(child, nn.ConvTranspose2d):
            setattr(module, name, BlurredConvTranspose2d.replacing(child))
        else:
            _blur_deconvs(child)


class SliceUNet(nn.Module):
    """A 2D UNet on stacks of neighbouring slices of any subset of sequences, conditioned on which are present.

    Args:
        backbone: 2D network mapping ``num_inputs * (2 * context + 1)`` channels to ``num_outputs`` channels, with
            normalisation layers (they carry the FiLM conditioning).
        num_inputs: number of input modalities ``M_in``.
        num_outputs: number of output modalities ``M_out``.
        context: neighbouring slices on each side.
        divisor: in-plane sizes are padded to a multiple of this (the backbone's total down-sampling).

    Raises:
        ValueError: the backbone has no normalisation layer to condition.
    """

    def __init__(self, backbone: nn.Module, num_inputs: int, num_outputs: int, context: int, divisor: int) -> None:
        super().__init__()
        self.num_inputs, self.num_outputs, self.context, self.divisor = num_inputs, num_outputs, context, divisor
        self.condition = _Condition()
        if _add_film(backbone, num_inputs, self.condition) == 0:
            raise ValueError("the backbone needs normalisation layers for the presence conditioning")
        self.backbone = backbone

    def forward(self, slices: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Translate a batch of slice stacks.

        Args:
            slices: ``(B, M_in, 2 * context + 1, H, W)`` normalised inputs; absent sequences hold the background.
            present: ``(B, M_in)`` 0/1 (or bool): which sequences are inputs.

        Returns:
            ``(B, M_out, H, W)``: every output modality for the centre slice.
        """
        depth = 2 * self.context + 1
        if slices.ndim != 5 or slices.shape[1] != self.num_inputs or slices.shape[2] != depth:
            raise ValueError(f"slices must be (B, {self.num_inputs}, {depth}, H, W), got {tuple(slices.shape)}")
        if present.shape != slices.shape[:2]:
            raise ValueError(f"present must be (B, {self.num_inputs}), got {tuple(present.shape)}")
        height, width = slices.shape[-2:]
        x = slices.flatten(1, 2)
        pad_h = math.ceil(height / self.divisor) * self.divisor - height
        pad_w = math.ceil(width / self.divisor) * self.divisor - width
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=BACKGROUND)
        self.condition.value = present.to(x.dtype)
        return self.backbone(x)[:, :, :height, :width]


def build_slice_unet(
    *,
    input_modalities: Sequence[str],
    modalities: Sequence[str],
    context: int = 1,
    channels: Sequence[int] = (32, 64, 128, 256),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 2,
    norm: str = "instance",
    dropout: float = 0.0,
    upsample: str = "deconv",
) -> SliceUNet:
    """Build the network from its keyword config (the bundle's ``network`` field).

    Args:
        input_modalities: registry keys of the sequences the network reads (channel groups, in order).
        modalities: registry keys of the outputs (channels, in order).
        context: neighbouring slices on each side of the translated one (0 = plain 2D).
        channels: feature widths per level of MONAI's ``UNet``.
        strides: down-sampling per level (one fewer than ``channels``).
        num_res_units: residual units per block.
        norm: normalisation layer (``"instance"``, ``"batch"``); it carries the presence conditioning.
        dropout: dropout probability.
        upsample: ``"deconv"`` (MONAI's transposed convolutions) or ``"deconv_blur"`` (each followed by a fixed
            binomial blur: no checkerboard; same weights, see :class:`BlurredConvTranspose2d`).

    Raises:
        ValueError: an inconsistent or unknown setting.
    """
    if not input_modalities or len(set(input_modalities)) != len(input_modalities):
        raise ValueError(f"input_modalities must be distinct registry keys, got {list(input_modalities)}")
    if not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be distinct registry keys, got {list(modalities)}")
    if not isinstance(context, int) or not 0 <= context <= 8:
        raise ValueError(f"context must be an int in [0, 8], got {context!r}")
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels must be positive ints, got {list(channels)}")
    if len(strides) != len(channels) - 1 or any(not isinstance(s, int) or s < 1 for s in strides):
        raise ValueError(f"strides must be {len(channels) - 1} positive ints (one fewer than channels)")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if not norm:
        raise ValueError("norm is required: the presence conditioning modulates the normalisation layers")
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(f"upsample must be one of {list(UPSAMPLE_MODES)}, got {upsample!r}")
    backbone = nn.Sequential(
        UNet(
            spatial_dims=2,
            in_channels=len(input_modalities) * (2 * context + 1),
            out_channels=channels[0],
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
            dropout=dropout,
        ),
        nn.Conv2d(channels[0], len(modalities), kernel_size=1),
    )
    if upsample == "deconv_blur":
        _blur_deconvs(backbone)
    return SliceUNet(backbone, len(input_modalities), len(modalities), context, math.prod(strides))


def slice_stack(volume: torch.Tensor, first: int, stop: int, context: int) -> torch.Tensor:
    """Slices ``first .. stop - 1`` of a volume, each with ``context`` neighbours on each side (edges replicated).

    Args:
        volume: ``(C, Z, Y, X)``.

    Returns:
        ``(stop - first, C, 2 * context + 1, Y, X)``.
    """
    depth = volume.shape[1]
    offsets = torch.arange(-context, context + 1)
    index = (torch.arange(first, stop)[:, None] + offsets[None]).clamp(0, depth - 1)  # (N, 2k+1)
    return volume[:, index].permute(1, 0, 2, 3, 4)


#: Optional weight file: reference in-brain quantiles per target modality (normalised), see ``_standardised``.
OUTPUT_QUANTILES_FILE = "output_quantiles.safetensors"
#: Upper clip of brain-percentile outputs: the brightest 0.5 % of a target's tissue reach a little above 1.
OUTPUT_HIGH = 1.5
#: In-plane margin (voxels) kept around the signal box.
BOX_MARGIN = 16


def signal_box(volume: torch.Tensor, divisor: int = 1) -> tuple[slice, slice, slice] | None:
    """The ``(z, y, x)`` box of the voxels above the background in any channel, grown by :data:`BOX_MARGIN`
    in-plane and to a multiple of ``divisor`` where the volume allows; ``None`` when it is all background.

    Args:
        volume: ``(C, Z, Y, X)`` normalised.
    """
    signal = (volume > BACKGROUND + 1e-6).any(0)
    if not signal.any():
        return None
    box = []
    for axis in range(3):
        hits = torch.nonzero(signal.any(dim=tuple(a for a in range(3) if a != axis))).flatten()
        start, stop, size = int(hits[0]), int(hits[-1]) + 1, signal.shape[axis]
        if axis > 0:
            start, stop = max(start - BOX_MARGIN, 0), min(stop + BOX_MARGIN, size)
            length = min(math.ceil((stop - start) / divisor) * divisor, size)
            start = min(max(start - (length - (stop - start)) // 2, 0), size - length)
            stop = start + length
        box.append(slice(start, stop))
    return tuple(box)


class SliceUNetTranslator(Translator):
    """Runs a trained ``slice_unet`` bundle: weights ``model.safetensors``, config in ``metadata["network"]``.

    The bundle has no grid (``"grid": null``): the pipeline hands the whole volume as one window, and the slices
    are translated here in batches of ``batch_slices`` (progress and cancel between batches).
    """

    family = "slice_unet"
    multi_source = True
    #: slices per forward pass (bounds the activation memory whatever the volume's depth).
    batch_slices = 8

    def __init__(self, bundle, device: torch.device | str = "cpu") -> None:
        super().__init__(bundle, device)
        config: dict[str, Any] = dict(bundle.metadata["network"])
        self.network = build_slice_unet(**config)
        self.network.load_state_dict(bundle.load_weights("model.safetensors"))
        self.network.to(self.device).eval()
        self.inputs = {key: i for i, key in enumerate(config["input_modalities"])}
        # Brain-percentile targets hold tissue in [-0.8, 1] (0.5th-99.5th percentiles): a prediction outside what
        # any training target held is extrapolation, so it is clipped to that range (the background is masked).
        scheme = (bundle.metadata.get("normalisation") or {}).get("mr_scheme")
        self.output_range = (BRAIN_LOW_VALUE, OUTPUT_HIGH) if scheme == "brain_percentiles" else None
        # Optional: the reference in-brain quantiles of each target (its training subjects'), onto which the
        # prediction's own in-brain histogram is mapped monotonically (see :meth:`_standardised`).
        self.output_quantiles = (
            load_quantiles(bundle, OUTPUT_QUANTILES_FILE) if OUTPUT_QUANTILES_FILE in bundle.metadata["weights"] else {}
        )
        self.outputs = {key: i for i, key in enumerate(config["modalities"])}

    def bytes_per_window_voxel(self) -> float:
        # The whole volume is one window: the stacked inputs of one batch are small; the output and the input
        # channel copy per voxel dominate.
        network = self.bundle.metadata["network"]
        return 4.0 * (len(network["input_modalities"]) + 2)

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
        if sources.shape[1] != len(source_modalities):
            raise ValueError(f"{sources.shape[1]} source channels but {len(source_modalities)} modalities")
        self.check_sources(source_modalities, target_modality)
        batch, _, depth, height, width = sources.shape
        volume = torch.full(
            (batch, len(self.inputs), depth, height, width), BACKGROUND, dtype=torch.float32, device=sources.device
        )
        present = torch.zeros(len(self.inputs), dtype=torch.float32)
        for channel, key in enumerate(source_modalities):
            volume[:, self.inputs[key]] = sources[:, channel].clamp(min=BACKGROUND)  # as in training
            present[self.inputs[key]] = 1.0
        out = torch.full((batch, 1, depth, height, width), BACKGROUND, dtype=torch.float32, device=sources.device)
        target = self.outputs[target_modality]
        context = self.network.context
        # Only the box holding signal (plus a margin) is translated: the rest of a skull-stripped volume is
        # background, and skipping it halves the work on a BraTS grid.
        boxes = [signal_box(volume[b], self.network.divisor) for b in range(batch)]
        total = sum(math.ceil((box[0].stop - box[0].start) / self.batch_slices) for box in boxes if box) or 1
        done = 0
        with torch.no_grad():
            for b, box in enumerate(boxes):
                if box is None:
                    continue
                zs, ys, xs = box
                for first in range(zs.start, zs.stop, self.batch_slices):
                    check_cancel(cancel)
                    stop = min(first + self.batch_slices, zs.stop)
                    stack = slice_stack(volume[b, :, :, ys, xs], first, stop, context).to(self.device)
                    code = present.to(self.device).expand(stack.shape[0], -1)
                    predicted = self.network(stack, code)[:, target]
                    if self.output_range is not None:
                        predicted = predicted.clamp(*self.output_range)
                    out[b, 0, first:stop, ys, xs] = predicted.to(out.device)
                    done += 1
                    if progress is not None:
                        progress(done / total)
        if target_modality in self.output_quantiles:
            out = self._standardised(out, volume, target_modality)
        return out

    def _standardised(self, out: torch.Tensor, inputs: torch.Tensor, target_modality: str) -> torch.Tensor:
        """Map the prediction's in-brain histogram onto the target's reference quantiles.

        Monotone, so the contrast order the network predicts is kept while its intensity distribution becomes
        the one the target's training scans have: a regression network trained with L1 on few subjects predicts a
        compressed, median-like range (dark CSF of a T2 comes out grey); this restores the range without
        changing which voxel is brighter.

        Args:
            out: ``(B, 1, Z, Y, X)`` normalised prediction.
            inputs: ``(B, M, Z, Y, X)`` the normalised inputs; the brain is where any of them is above background.
        """
        reference = self.output_quantiles[target_modality]
        for b in range(out.shape[0]):
            brain = (inputs[b] > BACKGROUND + 1e-6).any(0).cpu().numpy()
            if not brain.any():
                continue
            values = out[b, 0].cpu().double().numpy()
            values[brain] = match_quantiles(values[brain], volume_quantiles(values, brain), reference)
            out[b, 0] = torch.from_numpy(values).to(out.device, out.dtype)
        return out
