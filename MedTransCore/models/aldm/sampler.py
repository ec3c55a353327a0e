"""Noise schedule and the DDIM sampling loop in latent space.

MONAI's ``LatentDiffusionInferer`` has no class-label pass-through, so the loop is written here. The schedule
comes from MONAI's schedulers (T = 1000, scaled-linear betas 0.0015..0.0195 as in the paper); the DDIM update
(eta = 0) is done here from ``alphas_cumprod`` with the *actual* previous timestep of the chosen sub-sequence:
``DDIMScheduler.step`` assumes evenly spaced timesteps ``T // steps`` apart, which its own rounded
``linspace`` sub-sequence is not. There is no sample clipping (latents are not in [-1, 1]).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from ..base import CancelFn, check_cancel
from .networks import ConditionedDiffusionUNet

SCHEDULE_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "schedule": "scaled_linear_beta",
    "beta_start": 0.0015,
    "beta_end": 0.0195,
}


def build_scheduler(kind: str = "ddim", **cfg: Any) -> DDIMScheduler | DDPMScheduler:
    """A MONAI scheduler with the ALDM schedule (``cfg`` overrides :data:`SCHEDULE_DEFAULTS`).

    Args:
        kind: ``"ddim"`` (inference; never clips samples) or ``"ddpm"`` (training: ``add_noise``).

    Raises:
        ValueError: unknown kind or keyword.
    """
    unknown = sorted(set(cfg) - set(SCHEDULE_DEFAULTS))
    if unknown:
        raise ValueError(f"scheduler: unknown keyword(s) {unknown}; allowed: {sorted(SCHEDULE_DEFAULTS)}")
    full = {**SCHEDULE_DEFAULTS, **cfg}
    if kind == "ddim":
        return DDIMScheduler(clip_sample=False, prediction_type="epsilon", **full)
    if kind == "ddpm":
        return DDPMScheduler(clip_sample=False, prediction_type="epsilon", **full)
    raise ValueError(f"scheduler kind must be 'ddim' or 'ddpm', got {kind!r}")


def initial_noise(shape: tuple[int, ...], seed: int, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from ``seed`` (the same on every device), then moved to ``device``."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def ddim_sample(
    model: ConditionedDiffusionUNet,
    condition: torch.Tensor,
    target_index: torch.Tensor,
    scheduler: DDIMScheduler,
    steps: int,
    *,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    cancel: CancelFn | None = None,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from seeded noise to a clean latent.

    Args:
        model: the noise predictor.
        condition: ``(B, 2C, z, y, x)`` source latent and SPADE(source latent).
        target_index: ``(B,)`` int64 target modality indices.
        scheduler: gives ``alphas_cumprod`` and the timestep sub-sequence.
        steps: number of denoising steps (1 .. ``num_train_timesteps``).
        seed: seed of the initial noise (same seed, same result).
        progress: called with the fraction of steps done.
        cancel: polled before every step.

    Returns:
        ``(B, C, z, y, x)`` the sampled (scaled) target latent.
    """
    total = scheduler.num_train_timesteps
    if not 1 <= int(steps) <= total:
        raise ValueError(f"steps must be between 1 and {total}, got {steps}")
    scheduler.set_timesteps(int(steps))
    timesteps = [int(t) for t in scheduler.timesteps]
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    channels = condition.shape[1] // 2
    x = initial_noise((condition.shape[0], channels, *condition.shape[2:]), seed, condition.device, condition.dtype)
    for i, t in enumerate(timesteps):
        check_cancel(cancel)
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = model(x, t_batch, condition, target_index)
        a_t = float(alphas[t])
        a_prev = float(alphas[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        x0 = (x - (1.0 - a_t) ** 0.5 * eps) / a_t**0.5
        x = a_prev**0.5 * x0 + (1.0 - a_prev) ** 0.5 * eps
        if progress is not None:
            progress((i + 1) / len(timesteps))
    return x
