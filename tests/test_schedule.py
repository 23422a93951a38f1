from __future__ import annotations

import math

import pytest
import torch

from mnist_diffusion.config import DiffusionConfig
from mnist_diffusion.schedule import NoiseSchedule, cosine_betas, linear_betas


def test_linear_betas_span_the_ddpm_range() -> None:
    betas = linear_betas(1000)
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert torch.all(betas[1:] > betas[:-1])


def test_cosine_schedule_matches_its_closed_form() -> None:
    schedule = NoiseSchedule(DiffusionConfig(num_timesteps=1000, beta_schedule="cosine"))
    s, T = 0.008, 1000

    def f(t: float) -> float:
        return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2

    for t in (0, 10, 500, 900):
        # alphas_cumprod[t] is abar at diffusion time t + 1 (t = 0 is the first noising step).
        assert schedule.alphas_cumprod64[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert cosine_betas(1000).max().item() <= 0.999


def test_time_convention_t0_is_least_noisy() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    abar = schedule.alphas_cumprod64
    assert torch.all(abar[1:] < abar[:-1])
    assert abar[0].item() == pytest.approx(1 - 1e-4)
    assert abar[-1].item() < 1e-4  # t = T-1 is (nearly) pure noise
    assert torch.all(schedule.log_snr[1:] < schedule.log_snr[:-1])


def test_q_sample_has_the_closed_form_mean_and_variance() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((20_000, 1, 1, 1), 0.7)
    t = torch.full((20_000,), 300)
    x_t = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=generator))
    abar = schedule.alphas_cumprod64[300].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(abar) * 0.7, abs=0.02)
    assert x_t.var().item() == pytest.approx(1 - abar, rel=0.03)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_network_output_converts_back_to_x0_and_eps(prediction_type: str) -> None:
    schedule = NoiseSchedule(DiffusionConfig(prediction_type=prediction_type))
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(8, 1, 4, 4, generator=generator)
    noise = torch.randn(8, 1, 4, 4, generator=generator)
    t = torch.tensor([0, 1, 100, 300, 500, 700, 900, 999])
    x_t = schedule.q_sample(x0, t, noise)
    x0_hat, eps_hat = schedule.to_x0_eps(x_t, t, schedule.training_target(x0, t, noise))
    torch.testing.assert_close(eps_hat, noise, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(x0_hat[t < 900], x0[t < 900], atol=1e-3, rtol=1e-3)


def test_bad_diffusion_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="beta_schedule"):
        DiffusionConfig(beta_schedule="quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_timesteps"):
        DiffusionConfig(num_timesteps=1)


def test_linear_betas_are_rescaled_for_a_shorter_chain() -> None:
    """The DDPM end points are for T = 1000; at T = 300 they are scaled by 1000 / 300 so the chain
    still ends in noise. Unscaled, abar_T stays near 0.048: a fifth of the signal's amplitude is left."""
    betas = linear_betas(300)
    assert betas[0].item() == pytest.approx(1e-4 * 1000 / 300) and betas[-1].item() == pytest.approx(0.02 * 1000 / 300)
    schedule = NoiseSchedule(DiffusionConfig(num_timesteps=300))
    assert schedule.alphas_cumprod64[-1].item() < 1e-4
    unscaled = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 300, dtype=torch.float64), 0)[-1].item()
    assert unscaled == pytest.approx(0.048, abs=0.002)
