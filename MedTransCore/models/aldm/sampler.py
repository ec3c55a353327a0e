"""Noise schedule and the sampling loops in latent space: DDIM and DPM-Solver++ (2M).

MONAI's ``LatentDiffusionInferer`` has no class-label pass-through, so the loops are written here. The schedule
comes from MONAI's schedulers (T = 1000, scaled-linear betas 0.0015..0.0195 as in the paper); the DDIM update
(eta = 0) is done here from ``alphas_cumprod`` with the *actual* previous timestep of the chosen sub-sequence:
``DDIMScheduler.step`` assumes evenly spaced timesteps ``T // steps`` apart, which its own rounded
``linspace`` sub-sequence is not. There is no sample clipping (latents are not in [-1, 1]).

``"dpmpp"`` is DPM-Solver++ (2M) (Lu et al. 2022, multistep, midpoint form, data prediction from epsilon) on
exactly the same ``alphas_cumprod``, with no thresholding: its first step is a DDIM step, later steps add a
second-order correction from the previous step's prediction, and the last step goes to sigma 0 (the x0
prediction). Timesteps and updates are those of diffusers' ``DPMSolverMultistepScheduler`` (``linspace``
spacing, ``lower_order_final``, ``final_sigmas_type="zero"``); the tests check both agree to float precision.
It is written out here rather than imported because importing diffusers costs about 3 CPU-seconds per process,
as much as the network calls it saves on a CPU at 128^3.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

from ...errors import InputError
from ..base import CancelFn, check_cancel
from .networks import ConditionedDiffusionUNet

#: Sampler names (bundle ``metadata["sampler"]["scheduler"]``, ``medtrans translate --sampler``).
SAMPLERS = ("ddim", "dpmpp")

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


def _check_steps(scheduler: DDIMScheduler, steps: int) -> None:
    total = scheduler.num_train_timesteps
    if not 1 <= int(steps) <= total:
        raise ValueError(f"steps must be between 1 and {total}, got {steps}")


def _initial_latent(condition: torch.Tensor, seed: int) -> torch.Tensor:
    """Seeded noise of the target latent's shape: ``condition`` holds the source latent and SPADE of it (2C channels)."""
    channels = condition.shape[1] // 2
    return initial_noise((condition.shape[0], channels, *condition.shape[2:]), seed, condition.device, condition.dtype)


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
    _check_steps(scheduler, steps)
    scheduler.set_timesteps(int(steps))
    timesteps = [int(t) for t in scheduler.timesteps]
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    x = _initial_latent(condition, seed)
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


def dpmpp_timesteps(num_train_timesteps: int, steps: int) -> list[int]:
    """The ``steps`` timesteps of DPM-Solver++: ``T - 1`` down to about ``T / steps`` (diffusers' ``linspace``)."""
    return [int(t) for t in np.linspace(0, num_train_timesteps - 1, steps + 1).round()[::-1][:-1]]


def dpmpp_sample(
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
    """DPM-Solver++ (2M) from seeded noise to a clean latent; same arguments and result as :func:`ddim_sample`.

    With ``alpha = sqrt(alphas_cumprod)``, ``sigma = sqrt(1 - alphas_cumprod)``, ``lambda = log(alpha / sigma)``
    and ``x0`` the data prediction of each step, a step from ``s`` to ``t`` is
    ``x_t = sigma_t / sigma_s * x_s - alpha_t * expm1(-h) * D`` with ``h = lambda_t - lambda_s`` and
    ``D = x0_s + (h / 2 h_prev) (x0_s - x0_prev)`` (``D = x0_s`` on the first step); the last step returns ``x0``.
    """
    _check_steps(scheduler, steps)
    timesteps = dpmpp_timesteps(scheduler.num_train_timesteps, int(steps))
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    alpha = [float(alphas[t]) ** 0.5 for t in timesteps]
    sigma = [(1.0 - float(alphas[t])) ** 0.5 for t in timesteps]
    lam = [math.log(a / s) for a, s in zip(alpha, sigma, strict=True)]
    x = _initial_latent(condition, seed)
    previous: torch.Tensor | None = None
    for i, t in enumerate(timesteps):
        check_cancel(cancel)
        eps = model(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long), condition, target_index)
        x0 = (x - sigma[i] * eps) / alpha[i]
        if i + 1 == len(timesteps):
            x = x0  # the last step goes to sigma 0: a first-order step there is the data prediction
        else:
            h = lam[i + 1] - lam[i]
            d = x0 if previous is None else x0 + (h / (2.0 * (lam[i] - lam[i - 1]))) * (x0 - previous)
            x = (sigma[i + 1] / sigma[i]) * x - (alpha[i + 1] * math.expm1(-h)) * d
        previous = x0
        if progress is not None:
            progress((i + 1) / len(timesteps))
    return x


def sample(
    model: ConditionedDiffusionUNet,
    condition: torch.Tensor,
    target_index: torch.Tensor,
    scheduler: DDIMScheduler,
    steps: int,
    *,
    sampler: str = "ddim",
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    cancel: CancelFn | None = None,
) -> torch.Tensor:
    """Run the sampler named ``sampler`` (one of :data:`SAMPLERS`); see :func:`ddim_sample` for the arguments.

    Raises:
        InputError: an unknown sampler name.
    """
    loops = {"ddim": ddim_sample, "dpmpp": dpmpp_sample}
    if sampler not in loops:
        raise InputError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return loops[sampler](model, condition, target_index, scheduler, steps, seed=seed, progress=progress, cancel=cancel)
