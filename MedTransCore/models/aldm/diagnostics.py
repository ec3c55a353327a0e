"""How strongly the diffusion UNet's noise prediction depends on each of its inputs.

A target modality that reaches the UNet only through a per-channel bias before a GroupNorm can be normalised
away (exactly so with one channel per group), so the network learns one average translation whatever the
target. :func:`conditioning_signal` measures that on real latents: the relative change of the predicted noise
when only the target label changes, against when only the SPADE condition changes.
"""

from __future__ import annotations

import torch

from .networks import ConditionedDiffusionUNet


def relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||a||`` (0 when ``a`` is all zeros and ``b`` equals it)."""
    norm = float(a.double().norm())
    diff = float((a.double() - b.double()).norm())
    return diff / norm if norm > 0 else diff


@torch.no_grad()
def conditioning_signal(
    model: ConditionedDiffusionUNet,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    condition: torch.Tensor,
    target_index: torch.Tensor,
    *,
    other_condition: torch.Tensor,
    other_index: torch.Tensor,
) -> dict[str, float]:
    """Relative changes of the predicted noise when one conditioning input changes and the rest stays fixed.

    Args:
        model: the noise predictor (evaluated as is: call ``.eval()`` first).
        noisy: ``(B, C, z, y, x)`` noisy target latent.
        timesteps: ``(B,)`` diffusion timesteps.
        condition: ``(B, 2C, z, y, x)`` source latent and SPADE(source latent) for the target ``target_index``.
        target_index: ``(B,)`` target modality indices.
        other_condition: the condition for another target (SPADE run with the other target's parameters).
        other_index: the other target's indices.

    Returns:
        ``class``: the change when only the label changes; ``spade``: only the condition tensor;
        ``both``: both (a real change of target); ``class_to_spade``: ``class / spade``.
    """
    base = model(noisy, timesteps, condition, target_index)
    label = relative_change(base, model(noisy, timesteps, condition, other_index))
    spade = relative_change(base, model(noisy, timesteps, other_condition, target_index))
    both = relative_change(base, model(noisy, timesteps, other_condition, other_index))
    return {
        "class": label,
        "spade": spade,
        "both": both,
        "class_to_spade": label / spade if spade > 0 else float("inf"),
    }
