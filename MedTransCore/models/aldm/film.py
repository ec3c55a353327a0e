"""FiLM / AdaGN conditioning of MONAI's ``DiffusionModelUNet`` that group normalisation cannot erase.

MONAI adds the block embedding (time + class) to each resnet block's activations *before* ``norm2``. A
per-channel constant is exactly what GroupNorm removes: with one channel per group the target label has no
effect at all, and with a few channels per group only their differences within a group survive. (Cross-attention
on the single one-hot token is no better: a softmax over one key is 1, so it too adds a per-channel constant.)
As in ADM (Dhariwal & Nichol, "use_scale_shift_norm"), :func:`add_scale_shift_norms` replaces every ``norm2``
by ``(1 + scale(e)) * GroupNorm(h) + shift(e)`` with ``(scale, shift)`` a linear map of ``SiLU(e)``, where
``e`` is the embedding the block receives. MONAI's blocks are wrapped, not copied: a forward pre-hook hands
the block's embedding to its ``norm2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.diffusion_model_unet import DiffusionUNetResnetBlock
from torch import nn


class ScaleShiftGroupNorm(nn.Module):
    """``(1 + scale(e)) * norm(h) + shift(e)``, ``e`` set by the owning block just before each call.

    Args:
        norm: the block's ``GroupNorm`` (kept with its own affine parameters).
        emb_channels: width of the block embedding ``e``.

    The projection starts at zero, so a new network starts as MONAI's unconditioned-norm block.
    """

    def __init__(self, norm: nn.GroupNorm, emb_channels: int) -> None:
        super().__init__()
        self.norm = norm
        self.proj = nn.Linear(emb_channels, 2 * norm.num_channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.emb: torch.Tensor | None = None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.emb is None:
            raise RuntimeError("ScaleShiftGroupNorm runs only inside its resnet block (no embedding was set)")
        emb, self.emb = self.emb, None  # used once: no stale embedding, no tensor kept alive
        scale, shift = self.proj(F.silu(emb)).to(h.dtype).chunk(2, dim=1)
        shape = (*scale.shape, *([1] * (h.ndim - 2)))
        return self.norm(h) * (1.0 + scale.view(shape)) + shift.view(shape)


def _hand_embedding_to_norm2(block: nn.Module, args: tuple, kwargs: dict) -> None:
    block.norm2.emb = args[1] if len(args) > 1 else kwargs["emb"]


def add_scale_shift_norms(unet: nn.Module) -> int:
    """Make ``norm2`` of every MONAI ``DiffusionUNetResnetBlock`` in ``unet`` a :class:`ScaleShiftGroupNorm`.

    Args:
        unet: a MONAI ``DiffusionModelUNet`` (changed in place).

    Returns:
        the number of blocks changed.

    Raises:
        ValueError: ``unet`` has no resnet block.
    """
    blocks = [m for m in unet.modules() if isinstance(m, DiffusionUNetResnetBlock)]
    if not blocks:
        raise ValueError("add_scale_shift_norms: the network has no DiffusionUNetResnetBlock")
    for block in blocks:
        block.norm2 = ScaleShiftGroupNorm(block.norm2, block.emb_channels)
        block.register_forward_pre_hook(_hand_embedding_to_norm2, with_kwargs=True)
    return len(blocks)
