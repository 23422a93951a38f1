"""Noise schedules and the forward process q(x_t | x_0).

Time convention, used everywhere: integer timesteps t in [0, T), t = 0 the least noisy.
`alphas_cumprod[t]` is alpha-bar_t of Ho et al. (2020), so x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
(eq. 4). Tables are computed once in float64 and cast to float32 (as improved-diffusion does).
"""

from __future__ import annotations

import math

import torch

from .config import DiffusionConfig


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linear betas of Ho et al. (2020), sec. 4; float64 `(T,)`.

    The end points are given for T = 1000; like improved-diffusion we rescale them by 1000 / T so a
    shorter chain still ends near pure noise (at T=300 the unscaled betas leave abar_T near 0.05:
    the last step still holds a fifth of the signal).
    """
    scale = 1000.0 / num_timesteps
    return torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), num_timesteps,
                          dtype=torch.float64)


def cosine_betas(num_timesteps: int, offset: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule of Nichol & Dhariwal (2021), eq. (17); float64 `(T,)`, betas clipped at 0.999."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta)


def timestep_share(t: int, num_timesteps: int) -> float:
    """Where timestep `t` lies on the chain as a share of T: t / (T - 1), 1 at pure noise, 0 at the
    cleanest step. Every "share of T" an option takes (a guidance interval, `guide_below`,
    `noise_below`) is measured with this."""
    return t / (num_timesteps - 1)


class NoiseSchedule:
    """The discrete variance-preserving schedule, with the quantities samplers need.

    Attributes (float32, shape `(T,)`): `alphas_cumprod`, `sqrt_alphas_cumprod`,
    `sqrt_one_minus_alphas_cumprod`, `log_snr` (log(abar / (1 - abar)), decreasing in t); in float64,
    `alphas_cumprod64` and `snr64` (abar / (1 - abar)).
    """

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        if config.beta_schedule == "linear":
            betas = linear_betas(config.num_timesteps, config.beta_start, config.beta_end)
        else:
            betas = cosine_betas(config.num_timesteps)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        in_float32 = alphas_cumprod.float()
        if not (in_float32 > 0).all() or not (in_float32 < 1).all():
            # The samplers divide by abar and by 1 - abar: both must stay non-zero in float32.
            raise ValueError(f"the {config.beta_schedule} schedule with beta_start {config.beta_start:g}, beta_end "
                             f"{config.beta_end:g} and T {config.num_timesteps} is unusable: alpha-bar must stay "
                             f"strictly between 0 and 1 at every step in float32 (the default betas are 1e-4 to 0.02)")
        self.num_timesteps = config.num_timesteps
        self.alphas_cumprod64 = alphas_cumprod
        self.alphas_cumprod = alphas_cumprod.float()
        self.sqrt_alphas_cumprod = alphas_cumprod.sqrt().float()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - alphas_cumprod).sqrt().float()
        self.log_snr = (alphas_cumprod.log() - (1.0 - alphas_cumprod).log()).float()
        self.snr64 = alphas_cumprod / (1.0 - alphas_cumprod)

    def alpha_sigma(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) for timesteps `t` `(B,)`, shaped `(B, 1, 1, 1)` to broadcast
        against `like` and in its dtype: the signal and noise scales of x_t = alpha x0 + sigma eps."""
        shape = (-1, *([1] * (like.ndim - 1)))
        alpha = self.sqrt_alphas_cumprod.to(t.device)[t].reshape(shape).to(like.dtype)
        sigma = self.sqrt_one_minus_alphas_cumprod.to(t.device)[t].reshape(shape).to(like.dtype)
        return alpha, sigma

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) with the given noise: eq. (4) of Ho et al. (2020)."""
        a, s = self.alpha_sigma(t, x0)
        return a * x0 + s * noise

    def v_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022, sec. 4)."""
        a, s = self.alpha_sigma(t, x0)
        return a * noise - s * x0

    def to_x0_eps(self, x_t: torch.Tensor, t: torch.Tensor,
                  output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert the network output at (x_t, t) into predictions of (x_0, eps)."""
        a, s = self.alpha_sigma(t, x_t)
        if self.config.prediction_type == "epsilon":
            eps = output
            x0 = (x_t - s * eps) / a
        else:  # v-prediction: x0 = a x_t - s v, eps = s x_t + a v
            x0 = a * x_t - s * output
            eps = s * x_t + a * output
        return x0, eps

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The noise that takes x0 to x_t at t: eq. (4) of Ho et al. (2020) solved for eps."""
        a, s = self.alpha_sigma(t, x_t)
        return (x_t - a * x0) / s

    def min_snr_weight(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Per-sample loss weight of min-SNR-gamma (Hang et al. 2023, eq. 9) for this schedule's
        prediction type: min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v. `(B,)`."""
        snr = self.snr64.to(t.device)[t]
        denominator = snr if self.config.prediction_type == "epsilon" else snr + 1.0
        return (snr.clamp(max=gamma) / denominator).float()

    def lognormal_timesteps(self, count: int, mean: float, std: float,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        """`count` timesteps whose noise levels follow a log-normal law: ln(sigma) ~ N(mean, std^2),
        sigma = sqrt((1 - abar) / abar), each draw taken to the step of nearest ln(sigma) (the
        training-noise density of Karras et al. 2022, eq. 5 and Table 1, on this discrete schedule).
        `(count,)` int64."""
        log_sigma = -0.5 * self.log_snr.double()  # increasing in t
        draws = mean + std * torch.randn(count, generator=generator, dtype=torch.float64)
        midpoints = 0.5 * (log_sigma[1:] + log_sigma[:-1])
        return torch.searchsorted(midpoints, draws)

    def training_target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.config.prediction_type == "epsilon":
            return noise
        return self.v_target(x0, t, noise)
