"""MS-SPADE: multiple switchable spatially adaptive normalisation in the autoencoder's latent space.

Design and how it maps to the paper (ALDM, Kim & Park, supplement Table B):

* ``in``: a convolution (paper: 7^3 kernel; here ``in_kernel_size``, default 3 to keep small latents cheap),
  instance norm, ReLU, from the latent channels to ``channels``.
* ``num_res_blocks`` plain residual blocks (paper: 2): conv 3^3, ReLU, instance norm, twice, plus the input.
* ``num_spade_blocks`` SPADE residual blocks (paper: 4): conv 3^3, ReLU, MS-SPADE, twice, plus the input.
* ``out``: a convolution back to the latent channels (paper: 7^3 kernel).

An MS-SPADE layer (:class:`SwitchableSPADE`) holds one MONAI ``SPADE`` per target modality and applies the
target's: ``x = gamma_tar(h) * (h - mu_c) / sigma_c + beta_tar(h)`` (paper Eq. 1), i.e. the parameter-free
instance norm is shared and the modulation convolutions producing ``gamma``/``beta`` are one set per target.
As in the paper's Eq. 1 and the released code, the modulation maps are computed from the normalised layer's
own input ``h``, so inference needs only the source latent and the target's name, never a target image.
Training fits ``spade(E(source), target)`` to ``E(target)`` with an L1 loss (see the ``aldm_spade`` stage).

Widths are far below the paper's (256): at 32 channels one CPU training step of 8 latents of 16^3 took ~11 s,
so the defaults are 16 channels (the block runs once per translation, not per sampler step).

With ``residual=True`` (default) the block predicts a correction to its input and the output convolution starts
at zero, so an untrained block is the identity: the target-like latent starts as the source latent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import SPADE, Convolution
from torch import nn


class SwitchableSPADE(nn.Module):
    """One MONAI ``SPADE`` per target modality, self-modulated (the modulation maps come from the input).

    Args:
        channels: channels of the normalised features.
        modalities: target modality keys, one parameter set each.
        hidden_channels: channels of the shared hidden layer of each modulation network.
        kernel_size: kernel of the modulation convolutions.
        norm: MONAI name of the parameter-free normalisation (paper: instance).
    """

    def __init__(
        self, channels: int, modalities: Sequence[str], hidden_channels: int, kernel_size: int, norm: str
    ) -> None:
        super().__init__()
        self.by_target = nn.ModuleDict(
            {
                m: SPADE(
                    label_nc=channels,
                    norm_nc=channels,
                    kernel_size=kernel_size,
                    spatial_dims=3,
                    hidden_channels=hidden_channels,
                    norm=norm,
                )
                for m in modalities
            }
        )

    def forward(self, x: torch.Tensor, targets: list[str]) -> torch.Tensor:
        """``x``: ``(B, C, z, y, x)``; ``targets``: one modality key per batch item."""
        unique = sorted(set(targets))
        if len(unique) == 1:
            return self.by_target[unique[0]](x, x)
        out = torch.empty_like(x)
        for target in unique:
            idx = torch.tensor([i for i, t in enumerate(targets) if t == target], device=x.device)
            out[idx] = self.by_target[target](x[idx], x[idx])
        return out


class _ResBlock(nn.Module):
    """conv, ReLU, instance norm, twice, plus the input (paper Table B, "ResBlock")."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(
                Convolution(3, channels, channels, kernel_size=3, act="RELU", norm="INSTANCE", adn_ordering="AN")
                for _ in range(2)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _SPADEResBlock(nn.Module):
    """conv, ReLU, MS-SPADE, twice, plus the input (paper Table B, "SPADEBlock")."""

    def __init__(
        self, channels: int, modalities: Sequence[str], hidden_channels: int, kernel_size: int, norm: str
    ) -> None:
        super().__init__()
        self.conv1 = Convolution(3, channels, channels, kernel_size=3, act="RELU", adn_ordering="A")
        self.norm1 = SwitchableSPADE(channels, modalities, hidden_channels, kernel_size, norm)
        self.conv2 = Convolution(3, channels, channels, kernel_size=3, act="RELU", adn_ordering="A")
        self.norm2 = SwitchableSPADE(channels, modalities, hidden_channels, kernel_size, norm)

    def forward(self, x: torch.Tensor, targets: list[str]) -> torch.Tensor:
        h = self.norm1(self.conv1(x), targets)
        return x + self.norm2(self.conv2(h), targets)


class MSSPADE(nn.Module):
    """Source latent -> target-like latent, switched by the target modality.

    Args:
        latent_channels: channels of the autoencoder latent.
        modalities: target modality keys (one modulation parameter set each).
        channels: width of the block.
        num_res_blocks: plain residual blocks before the SPADE blocks.
        num_spade_blocks: SPADE residual blocks.
        hidden_channels: hidden width of each modulation network.
        kernel_size: kernel of the modulation convolutions.
        in_kernel_size: kernel of the input and output convolutions (paper: 7).
        norm: parameter-free normalisation inside SPADE (MONAI name; paper: ``"INSTANCE"``).
        residual: add the input latent to the output (identity at initialisation).

    Raises:
        ValueError: no modalities, duplicated modalities, or non-positive sizes.
    """

    def __init__(
        self,
        latent_channels: int,
        modalities: Sequence[str],
        channels: int = 16,
        num_res_blocks: int = 1,
        num_spade_blocks: int = 2,
        hidden_channels: int = 16,
        kernel_size: int = 3,
        in_kernel_size: int = 3,
        norm: str = "INSTANCE",
        residual: bool = True,
    ) -> None:
        super().__init__()
        modalities = list(modalities)
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be a non-empty list without duplicates, got {modalities}")
        if min(latent_channels, channels, hidden_channels, kernel_size, in_kernel_size) < 1:
            raise ValueError("channels and kernel sizes must be positive")
        if num_res_blocks < 0 or num_spade_blocks < 1:
            raise ValueError("num_res_blocks must be >= 0 and num_spade_blocks >= 1")
        self.modalities = modalities
        self.residual = residual
        self.conv_in = Convolution(
            3, latent_channels, channels, kernel_size=in_kernel_size, act="RELU", norm="INSTANCE", adn_ordering="NA"
        )
        self.res_blocks = nn.Sequential(*(_ResBlock(channels) for _ in range(num_res_blocks)))
        self.spade_blocks = nn.ModuleList(
            _SPADEResBlock(channels, modalities, hidden_channels, kernel_size, norm) for _ in range(num_spade_blocks)
        )
        self.conv_out = Convolution(3, channels, latent_channels, kernel_size=in_kernel_size, conv_only=True)
        if residual:
            nn.init.zeros_(self.conv_out.conv.weight)
            nn.init.zeros_(self.conv_out.conv.bias)

    def forward(self, z: torch.Tensor, target: str | Sequence[str]) -> torch.Tensor:
        """Map source latents to target-like latents.

        Args:
            z: ``(B, C, z, y, x)`` source latents.
            target: one target modality key for the whole batch, or one per batch item.

        Returns:
            ``(B, C, z, y, x)`` target-like latents.
        """
        targets = [target] * z.shape[0] if isinstance(target, str) else list(target)
        if len(targets) != z.shape[0]:
            raise ValueError(f"got {len(targets)} targets for a batch of {z.shape[0]}")
        unknown = sorted(set(targets) - set(self.modalities))
        if unknown:
            raise ValueError(f"MS-SPADE has no parameters for target(s) {unknown}; it knows {self.modalities}")
        h = self.res_blocks(self.conv_in(z))
        for block in self.spade_blocks:
            h = block(h, targets)
        out = self.conv_out(h)
        return z + out if self.residual else out
