"""The ``unet`` family: direct 3D regression (pix2pix-style generator) conditioned on the modality pair.

The condition code is the one-hot code of the target modality and, by default, of the source modality (a
one-hot index is the modality's position in the bundle's ``modalities`` list); one network serves every pair
of its bundle. ``conditioning`` picks how the code enters:

* ``"film"``: every normalisation layer is followed by a per-channel scale and shift ``x * (1 + gamma) + beta``
  predicted from the code (a linear layer per norm, zero-initialised);
* ``"concat"``: the code is broadcast to constant channels concatenated to the input. Use it with ``norm=None``:
  instance norm subtracts a constant channel's offset again, and it also removes the absolute intensity level
  of each window, which CT-like targets (HU calibration) need.

With ``per_target_outputs`` the network has one output channel per modality and the target selects its channel
(the code is then the source's alone): one pass predicts every target, so training supervises all of a case's
modalities at once - the cheaper choice when compute is scarce.
The backbone is MONAI's ``UNet`` (residual units) or ``BasicUNet``; the bundle's ``network`` field holds the
exact keyword config of :func:`build_unet_network`.

A bundle with ``"input_standardisation": "histogram_matching"`` first maps the source's in-body histogram onto
the reference quantiles of the target modality in ``standardisation.safetensors`` (exactly the
``histogram-matching`` baseline, :func:`~MedTransCore.models.baselines.match_quantiles`) and the network refines
that: the global calibration of a scan (a CBCT's HU offset and scale) is a whole-volume statistic that a
window-sized network estimates poorly, while the local corrections (cupping, streaks, noise) are what it does well.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet, UNet
from torch import nn

from ..errors import BundleError
from .base import CancelFn, ProgressFn, Translator, check_cancel
from .baselines import load_quantiles, match_quantiles, volume_quantiles

ARCHITECTURES = ("unet", "basic_unet")
CONDITIONINGS = ("film", "concat")
STANDARDISATIONS = (None, "histogram_matching")
STANDARDISATION_FILE = "standardisation.safetensors"
# Normalised value of "nothing" (air / no MR signal): padding value for windows not divisible by the network.
BACKGROUND = -1.0


class _Condition:
    """The current batch's condition codes, shared by the FiLM layers of one network (set in ``forward``)."""

    value: torch.Tensor | None = None


class FiLMNorm(nn.Module):
    """A normalisation layer followed by a feature-wise affine map predicted from the condition codes.

    Args:
        norm: the wrapped normalisation layer (``InstanceNorm3d``, ``BatchNorm3d`` or ``GroupNorm``).
        channels: its number of channels.
        cond_dim: length of the condition code.
        condition: the shared holder of the current codes ``(B, cond_dim)``.
    """

    def __init__(self, norm: nn.Module, channels: int, cond_dim: int, condition: _Condition) -> None:
        super().__init__()
        self.norm = norm
        self.film = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.film.weight)  # starts as the plain network
        nn.init.zeros_(self.film.bias)
        self.condition = condition

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.film(self.condition.value.to(x.dtype)).chunk(2, dim=1)
        shape = (*gamma.shape, *([1] * (x.ndim - 2)))
        return self.norm(x) * (1 + gamma.view(shape)) + beta.view(shape)


def _add_film(module: nn.Module, cond_dim: int, condition: _Condition) -> int:
    """Wrap every normalisation layer under ``module`` in a :class:`FiLMNorm`; returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, (nn.modules.batchnorm._NormBase, nn.GroupNorm)):
            channels = child.num_channels if isinstance(child, nn.GroupNorm) else child.num_features
            setattr(module, name, FiLMNorm(child, channels, cond_dim, condition))
            count += 1
        else:
            count += _add_film(child, cond_dim, condition)
    return count


class ConditionedUNet(nn.Module):
    """A 3D UNet translating a source volume into the requested target modality (FiLM conditioning).

    Args:
        backbone: a network mapping one input channel to one output channel, with normalisation layers.
        num_modalities: length of the bundle's modality list (one-hot width).
        condition_on_source: condition on the source modality's code as well as the target's.
        residual: predict ``source + network(...)`` (useful for same-kind pairs such as CBCT -> CT).
        divisor: spatial sizes are padded to a multiple of this (the backbone's total down-sampling).
        per_target_outputs: the backbone has ``num_modalities`` output channels, one per target modality.
        conditioning: ``"film"`` or ``"concat"`` (see the module docstring).

    Raises:
        ValueError: FiLM conditioning is needed but the backbone has no normalisation layer.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_modalities: int,
        condition_on_source: bool = True,
        residual: bool = False,
        divisor: int = 1,
        per_target_outputs: bool = False,
        conditioning: str = "film",
    ) -> None:
        super().__init__()
        self.num_modalities = num_modalities
        self.condition_on_source = condition_on_source
        self.residual = residual
        self.divisor = divisor
        self.per_target_outputs = per_target_outputs
        self.condition = _Condition()
        self.conditioning = conditioning
        cond_dim = num_modalities * (int(condition_on_source) + int(not per_target_outputs))
        if conditioning == "film" and cond_dim and _add_film(backbone, cond_dim, self.condition) == 0:
            raise ValueError("the backbone needs normalisation layers for FiLM conditioning (norm must not be None)")
        self.backbone = backbone

    def forward(self, source: torch.Tensor, source_index: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
        """Translate a batch.

        Args:
            source: ``(B, 1, Z, Y, X)`` normalised source.
            source_index: ``(B,)`` int64 source modality indices.
            target_index: ``(B,)`` int64 target modality indices.

        Returns:
            ``(B, 1, Z, Y, X)`` normalised target prediction.
        """
        out = self._run(source, source_index, None if self.per_target_outputs else target_index)
        if self.per_target_outputs:
            index = target_index.long().view(-1, 1, 1, 1, 1).expand(-1, 1, *out.shape[2:])
            out = out.gather(1, index)
        return out

    def forward_all(self, source: torch.Tensor, source_index: torch.Tensor) -> torch.Tensor:
        """Every target at once (``per_target_outputs`` networks): ``(B, 1, Z, Y, X)`` -> ``(B, M, Z, Y, X)``."""
        if not self.per_target_outputs:
            raise ValueError("forward_all needs a network built with per_target_outputs=True")
        return self._run(source, source_index, None)

    def _run(self, source: torch.Tensor, source_index: torch.Tensor, target_index: torch.Tensor | None) -> torch.Tensor:
        if source.ndim != 5 or source.shape[1] != 1:
            raise ValueError(f"source must be (B, 1, Z, Y, X), got {tuple(source.shape)}")
        size = source.shape[2:]
        pads = []
        for s in reversed(size):  # F.pad wants the last dimension first
            pads += [0, math.ceil(s / self.divisor) * self.divisor - s]
        x = F.pad(source, pads, value=BACKGROUND) if any(pads) else source
        codes = [] if target_index is None else [target_index]
        if self.condition_on_source:
            codes.insert(0, source_index)
        inputs = x
        if codes:
            self.condition.value = torch.cat([F.one_hot(c.long(), self.num_modalities) for c in codes], dim=1).float()
            if self.conditioning == "concat":
                planes = self.condition.value.to(x.dtype)[:, :, None, None, None].expand(-1, -1, *x.shape[2:])
                inputs = torch.cat([x, planes], dim=1)
        out = self.backbone(inputs)
        if self.residual:
            out = out + x
        return out[:, :, : size[0], : size[1], : size[2]]


def build_unet_network(
    *,
    num_modalities: int,
    architecture: str = "unet",
    channels: list[int] | tuple[int, ...] = (16, 32, 64, 128),
    strides: list[int] | tuple[int, ...] = (2, 2, 2),
    num_res_units: int = 1,
    norm: str = "instance",
    dropout: float = 0.0,
    condition_on_source: bool = True,
    residual: bool = False,
    per_target_outputs: bool = False,
    conditioning: str = "film",
) -> ConditionedUNet:
    """Build the conditioned generator from its keyword config (the bundle's ``network`` field).

    Args:
        num_modalities: number of modalities the network knows (>= 1).
        architecture: ``"unet"`` (MONAI ``UNet``; uses ``channels``, ``strides``, ``num_res_units``) or
            ``"basic_unet"`` (MONAI ``BasicUNet``; ``channels`` = its six ``features``; four 2x down-samplings).
        channels: feature widths per level.
        strides: down-sampling per level (``unet``; one fewer than ``channels``).
        num_res_units: residual units per block (``unet``).
        norm: normalisation layer name (``"instance"``, ``"batch"``, ...).
        dropout: dropout probability.
        condition_on_source: condition on the source modality too (code = both one-hots).
        residual: add the source to the output.
        per_target_outputs: one output channel per modality, selected by the target (the code is the source's).
        conditioning: ``"film"`` (needs a ``norm``) or ``"concat"`` (one-hot input channels; best with ``norm=None``).

    Raises:
        ValueError: an inconsistent or unknown setting.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    if not isinstance(num_modalities, int) or num_modalities < 1:
        raise ValueError(f"num_modalities must be a positive int, got {num_modalities!r}")
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"channels must be positive ints, got {channels!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
    outputs = num_modalities if per_target_outputs else 1
    cond_dim = num_modalities * (int(condition_on_source) + int(not per_target_outputs))
    in_channels = 1 + (cond_dim if conditioning == "concat" else 0)
    if architecture == "unet":
        if len(strides) != len(channels) - 1 or any(not isinstance(s, int) or s < 1 for s in strides):
            raise ValueError(f"strides must be {len(channels) - 1} positive ints (one fewer than channels)")
        # MONAI's UNet normalises its top up-sampling output (InstanceNorm of a single output channel would pin
        # every window to zero mean, unit variance), so it outputs channels[0] features and a 1x1x1 conv maps them.
        backbone = nn.Sequential(
            UNet(
                spatial_dims=3,
                in_channels=in_channels,
                out_channels=channels[0],
                channels=tuple(channels),
                strides=tuple(strides),
                num_res_units=num_res_units,
                norm=norm,
                dropout=dropout,
            ),
            nn.Conv3d(channels[0], outputs, kernel_size=1),
        )
        divisor = math.prod(strides)
    else:
        if len(channels) != 6:
            raise ValueError(f"basic_unet needs six channels (BasicUNet features), got {len(channels)}")
        backbone = BasicUNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=outputs,
            features=tuple(channels),
            norm=(norm, {"affine": True}),
            dropout=dropout,
        )
        divisor = 16
    return ConditionedUNet(
        backbone, num_modalities, condition_on_source, residual, divisor, per_target_outputs, conditioning
    )


class UNetTranslator(Translator):
    """Runs a trained ``unet`` bundle: weights ``model.safetensors``, config in ``metadata["network"]``."""

    family = "unet"

    def __init__(self, bundle, device: torch.device | str = "cpu") -> None:
        super().__init__(bundle, device)
        config: dict[str, Any] = dict(bundle.metadata["network"])
        self.network = build_unet_network(**config)
        self.network.load_state_dict(bundle.load_weights("model.safetensors"))
        self.network.to(self.device).eval()
        self.index = {key: i for i, key in enumerate(bundle.metadata["modalities"])}
        self.standardisation = bundle.metadata.get("input_standardisation")
        if self.standardisation not in STANDARDISATIONS:
            raise BundleError(
                f"bundle {bundle.name!r}: unknown input_standardisation {self.standardisation!r}; "
                f"known: {', '.join(map(str, STANDARDISATIONS))}"
            )
        self.reference = load_quantiles(bundle, STANDARDISATION_FILE) if self.standardisation else {}
        self._source_quantiles: np.ndarray | None = None

    def prepare(self, source: torch.Tensor, mask: torch.Tensor, source_modality: str, target_modality: str) -> None:
        if self.standardisation:
            self._source_quantiles = volume_quantiles(source.cpu().double().numpy(), mask.cpu().numpy())

    def pointwise_base(self, source: np.ndarray, target_modality: str) -> np.ndarray | None:
        # Residual + standardised: output = matched source + correction, so the matched source is the base.
        if not (self.standardisation and self.network.residual):
            return None
        return self._matched(source, target_modality)

    def _matched(self, source: np.ndarray, target_modality: str) -> np.ndarray:
        if self._source_quantiles is None:
            raise RuntimeError("prepare() must see the whole volume before windows are translated")
        return match_quantiles(np.asarray(source, np.float64), self._source_quantiles, self.reference[target_modality])

    def standardise(self, source: torch.Tensor, target_modality: str) -> torch.Tensor:
        """The network's input: the source itself, or histogram-matched to the target's reference quantiles."""
        if not self.standardisation:
            return source
        mapped = self._matched(source.cpu().double().numpy(), target_modality)
        return torch.from_numpy(mapped).to(source.device, source.dtype)

    def bytes_per_window_voxel(self) -> float:
        # Activations of the widest levels dominate: ~4 bytes x (first-level channels x a few tensors).
        width = self.bundle.metadata["network"].get("channels", [32])[0]
        return 4.0 * width * 12

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
        check_cancel(cancel)
        batch = source.shape[0]
        s = torch.full((batch,), self.index[source_modality], dtype=torch.long, device=source.device)
        t = torch.full((batch,), self.index[target_modality], dtype=torch.long, device=source.device)
        source = self.standardise(source, target_modality)
        with torch.no_grad():
            out = self.network(source.to(self.device, torch.float32), s.to(self.device), t.to(self.device))
        if progress is not None:
            progress(1.0)
        return out
