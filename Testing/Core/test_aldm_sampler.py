"""The ALDM noise schedule and DDIM loop: exact on an oracle denoiser, seeded, cancellable, with progress."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from MedTransCore.errors import CancelledError
from MedTransCore.models.aldm import build_scheduler, ddim_sample
from MedTransCore.models.aldm.sampler import initial_noise


class OracleDenoiser(nn.Module):
    """Predicts the exact noise that separates ``x_t`` from a known clean latent (the ideal network)."""

    def __init__(self, clean: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.clean, self.alphas = clean, alphas_cumprod
        self.calls = 0

    def forward(self, noisy, timesteps, condition, target_index):
        self.calls += 1
        a = self.alphas[timesteps].view(-1, 1, 1, 1, 1)
        return (noisy - a.sqrt() * self.clean) / (1 - a).sqrt()


class ConditionEcho(nn.Module):
    """A fixed non-trivial noise predictor: a function of the input and the condition."""

    def forward(self, noisy, timesteps, condition, target_index):
        return 0.5 * noisy + 0.1 * condition[:, : noisy.shape[1]]


def test_the_schedule_is_the_papers_and_never_clips_samples():
    scheduler = build_scheduler("ddim")
    assert scheduler.num_train_timesteps == 1000 and scheduler.clip_sample is False
    assert float(scheduler.betas[0]) == pytest.approx(0.0015) and float(scheduler.betas[-1]) == pytest.approx(0.0195)
    # scaled-linear: linear in sqrt(beta)
    root = scheduler.betas.sqrt()
    torch.testing.assert_close(root[1:] - root[:-1], torch.full((999,), float(root[1] - root[0])), rtol=1e-3, atol=1e-7)
    assert build_scheduler("ddpm").clip_sample is False
    with pytest.raises(ValueError):
        build_scheduler("euler")
    with pytest.raises(ValueError):
        build_scheduler("ddim", clip_sample=True)


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_ddim_with_an_ideal_denoiser_recovers_a_latent_far_outside_minus_one_to_one(steps):
    clean = torch.linspace(-6, 6, 2 * 3 * 4 * 5).reshape(1, 2, 3, 4, 5)
    scheduler = build_scheduler("ddim")
    oracle = OracleDenoiser(clean, scheduler.alphas_cumprod)
    out = ddim_sample(oracle, torch.zeros(1, 4, 3, 4, 5), torch.tensor([0]), scheduler, steps, seed=1)
    torch.testing.assert_close(out, clean, rtol=1e-4, atol=1e-4)
    assert oracle.calls == steps


def test_the_same_seed_gives_the_same_sample_and_another_seed_another():
    scheduler = build_scheduler("ddim")
    cond = torch.randn(2, 4, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    run = lambda seed: ddim_sample(ConditionEcho(), cond, torch.tensor([0, 1]), scheduler, 4, seed=seed)  # noqa: E731
    torch.testing.assert_close(run(7), run(7), rtol=0, atol=0)
    assert not torch.allclose(run(7), run(8))
    torch.testing.assert_close(
        initial_noise((2, 3), 5, "cpu", torch.float32), initial_noise((2, 3), 5, "cpu", torch.float32)
    )


def test_progress_is_reported_per_step_and_cancel_stops_the_loop():
    scheduler = build_scheduler("ddim")
    cond = torch.zeros(1, 2, 2, 2, 2)
    fractions = []
    ddim_sample(ConditionEcho(), cond, torch.tensor([0]), scheduler, 5, progress=fractions.append)
    assert fractions == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    echo = OracleDenoiser(torch.zeros(1, 1, 2, 2, 2), scheduler.alphas_cumprod)
    with pytest.raises(CancelledError):
        ddim_sample(echo, cond, torch.tensor([0]), scheduler, 5, cancel=lambda: echo.calls >= 2)
    assert echo.calls == 2
    with pytest.raises(ValueError):
        ddim_sample(echo, cond, torch.tensor([0]), scheduler, 0)
