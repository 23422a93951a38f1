"""The samplers' update rules, as pure functions with one signature, in the manner of k-diffusion's
`sampling.py` (`sampling.py` here builds the walk they take and the denoiser they call):

    sampler(denoise, x, timesteps, schedule, *, generator=None, callback=None) -> x_0

- `denoise(x_t, t)` returns the predictions `(x0_hat, eps_hat)` at integer timesteps `t` `(B,)`;
  `Denoiser` builds one from a network (classifier-free guidance and clipping included).
- `x` is the starting noise `(B, C, H, W)`; `timesteps` a descending 1-D tensor of ints from
  `make_timesteps`; after the last (t = 0) the sampler steps to the clean image, where
  alpha-bar = 1, so no noise is ever added at the last step.
- `generator` drives every random draw; `callback(info)` sees each step's `i`, `t`, `x`, `x0`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import torch

from .schedule import NoiseSchedule, timestep_share

Prediction = tuple[torch.Tensor, torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None


class DenoiseFn(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction: ...


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like `x`, drawn on the generator's device, moved to `x`'s."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def noise_levels(schedule: NoiseSchedule, timesteps: torch.Tensor) -> list[float]:
    """alpha-bar (float64) at each visited timestep, then 1.0, the clean image the last step lands on:
    the table every sampler walks, step i going from level i to level i + 1 (k-diffusion's sigmas
    with their trailing 0)."""
    return [*schedule.alphas_cumprod64[timesteps].tolist(), 1.0]


def ddpm_posterior(x0: torch.Tensor, x: torch.Tensor, abar_t: float, abar_s: float) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_s | x_t, x0), Ho et al. (2020) eqs. (6)-(7), between two levels of a
    respaced chain (Nichol & Dhariwal 2021, sec. 4): beta = 1 - abar_t / abar_s. At the clean level
    (abar_s = 1) the variance is 0 and the mean is x0 itself."""
    if abar_s >= 1.0:
        return x0, 0.0
    beta = 1.0 - abar_t / abar_s
    mean = (abar_s ** 0.5 * beta * x0 + (1.0 - beta) ** 0.5 * (1.0 - abar_s) * x) / (1.0 - abar_t)
    return mean, beta * (1.0 - abar_s) / (1.0 - abar_t)


def _batched(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


@torch.no_grad()
def sample_ddpm(denoise: DenoiseFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: NoiseSchedule, *,
                generator: torch.Generator | None = None, callback: Callback = None) -> torch.Tensor:
    """Ancestral sampling from the posterior q(x_s | x_t, x0_hat), Ho et al. (2020) eqs. (6)-(7).

    With every timestep this is the original DDPM sampler. With a subset, the betas between visited
    steps are respaced (Nichol & Dhariwal 2021, sec. 4): beta = 1 - abar_t / abar_s. The last step's
    posterior variance is zero, so its output is x0_hat itself.
    """
    levels = noise_levels(schedule, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x0, _ = denoise(x, _batched(t, x))
        x, variance = ddpm_posterior(x0, x, levels[i], levels[i + 1])
        if variance > 0:
            x = x + variance ** 0.5 * noise_like(x, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


@torch.no_grad()
def sample_ddim(denoise: DenoiseFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: NoiseSchedule, *,
                generator: torch.Generator | None = None, callback: Callback = None,
                eta: float = 0.0) -> torch.Tensor:
    """DDIM, Song et al. (2021) eq. (12), with sigma from eq. (16) scaled by `eta`.

    `eta = 0` is the deterministic DDIM ODE sampler; `eta = 1` matches DDPM's variance. Values in
    between interpolate; the paper's range is [0, 1], and that is what is accepted.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0 deterministic, 1 DDPM's variance), got {eta}")
    levels = noise_levels(schedule, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x0, eps = denoise(x, _batched(t, x))
        abar_t, abar_s = levels[i], levels[i + 1]
        sigma = eta * ((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)) ** 0.5
        x = abar_s ** 0.5 * x0 + max(1 - abar_s - sigma ** 2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * noise_like(x, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


def _half_log_snr(abar: float) -> float:
    """lambda = log(alpha / sigma) = log-SNR / 2, the time variable of DPM-Solver and UniPC."""
    return 0.5 * math.log(abar / (1 - abar))


def _dpm_pp_2m_step(x: torch.Tensor, x0: torch.Tensor, previous_x0: torch.Tensor | None, previous_h: float,
                    abar_t: float, abar_s: float) -> tuple[torch.Tensor, float]:
    """One DPM-Solver++(2M) step from level t to level s (< 1), and its size h in lambda:
        x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D,
        D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev,  r = h_prev / h  (D = x0_t on the first step)."""
    alpha_s, sigma_s, sigma_t = abar_s ** 0.5, (1 - abar_s) ** 0.5, (1 - abar_t) ** 0.5
    h = _half_log_snr(abar_s) - _half_log_snr(abar_t)
    if previous_x0 is None:
        d = x0
    else:
        r = previous_h / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * previous_x0
    return (sigma_s / sigma_t) * x - alpha_s * math.expm1(-h) * d, h


@torch.no_grad()
def sample_dpm_solver_pp(denoise: DenoiseFn, x: torch.Tensor, timesteps: torch.Tensor,
                         schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
                         callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. (2022), "DPM-Solver++", Algorithm 2 (multistep, data prediction).

    With lambda = log(alpha / sigma) and h = lambda_s - lambda_t (eq. 8):
        x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) D,
        D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev,  r = h_prev / h.
    The first step and the last (to the clean image, h = inf) are first order, which is DDIM.
    Deterministic: `generator` is accepted for the common signature and not used.
    """
    previous_x0: torch.Tensor | None = None
    previous_h = 0.0
    levels = noise_levels(schedule, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x0, _ = denoise(x, _batched(t, x))
        if levels[i + 1] >= 1.0:  # last step: straight to the denoised image
            x = x0
        else:
            x, previous_h = _dpm_pp_2m_step(x, x0, previous_x0, previous_h, levels[i], levels[i + 1])
            previous_x0 = x0
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


def unic_weights(h: float, r: float | None) -> tuple[float, float]:
    """UniC-2's weights (rho_prev, rho_new) with B(h) = e^h - 1 (bh2), data prediction (Zhao et al. 2023,
    "UniPC", Algorithm 2 and appendix C). `h` is the corrected step's size in lambda and `r` the step
    before it over h (None when the step was first order: then rho_new = 1/2, the trapezoid rule)."""
    if r is None:
        return 0.0, 0.5
    hh = -h  # data prediction integrates in -lambda
    phi = math.expm1(hh)
    g1 = phi / hh - 1
    g2 = g1 / hh - 0.5
    b1, b2 = g1 / phi, 2 * g2 / phi
    rk = -r  # the earlier level's lambda offset, in units of h
    # [[1, 1], [rk, 1]] @ (rho_prev, rho_new) = (b1, b2)
    rho_prev = (b1 - b2) / (1 - rk)
    return rho_prev, b1 - rho_prev


@torch.no_grad()
def sample_unipc(denoise: DenoiseFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: NoiseSchedule, *,
                 generator: torch.Generator | None = None, callback: Callback = None) -> torch.Tensor:
    """UniPC-2 (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
    Diffusion Models"), B(h) = e^h - 1, data prediction: DPM-Solver++(2M) predicts each step (it is
    UniP-2), and once the network has been evaluated at the new point, UniC redoes that step with the
    new evaluation as well:
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) [x0_s + rho_prev D_1 + rho_new (x0_t - x0_s)],
        D_1 = (x0_prev - x0_s) / (-r),  r = h_prev / h,  (rho_prev, rho_new) from `unic_weights`.
    The correction reuses the evaluation the next step needs anyway (taken at the uncorrected point),
    so it costs no network pass and raises the order of accuracy by one, an Adams-Moulton step after an
    Adams-Bashforth one. The last step returns the clean image predicted at the last level, as every
    sampler here does, so that level is not corrected. Deterministic; `generator` is not used.
    """
    levels = noise_levels(schedule, timesteps)
    history: list[torch.Tensor] = []  # the network's x0 at the last two visited levels
    start = x  # the point the last predictor step left from
    previous_h = 0.0
    for i, t in enumerate(timesteps.tolist()):
        x0, _ = denoise(x, _batched(t, x))
        if history and levels[i + 1] < 1.0:  # UniC: correct the point this step's evaluation was taken at
            h = _half_log_snr(levels[i]) - _half_log_snr(levels[i - 1])
            rho_prev, rho_new = unic_weights(h, previous_h / h if len(history) > 1 else None)
            data = history[-1] + rho_new * (x0 - history[-1])
            if len(history) > 1:
                data = data + rho_prev * (history[-1] - history[-2]) / (previous_h / h)
            x = ((1 - levels[i]) / (1 - levels[i - 1])) ** 0.5 * start - levels[i] ** 0.5 * math.expm1(-h) * data
            previous_h = h
        history = [*history[-1:], x0]
        if levels[i + 1] >= 1.0:
            x = x0
        else:
            start = x
            x, _ = _dpm_pp_2m_step(x, x0, history[-2] if len(history) > 1 else None, previous_h,
                                   levels[i], levels[i + 1])
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


@torch.no_grad()
def sample_dpm_solver_pp_sde(denoise: DenoiseFn, x: torch.Tensor, timesteps: torch.Tensor,
                             schedule: NoiseSchedule, *, generator: torch.Generator | None = None,
                             callback: Callback = None, eta: float = 1.0,
                             noise_below: float | None = None) -> torch.Tensor:
    """SDE-DPM-Solver++(2M): DPM-Solver++'s second-order multistep update for the reverse SDE (Lu et
    al. 2022, "DPM-Solver++", sec. 5 and appendix; k-diffusion's `sample_dpmpp_2m_sde`, midpoint form).

    With lambda = log(alpha / sigma), h = lambda_s - lambda_t and g = (1 + eta) h:
        x_s = (sigma_s / sigma_t) exp(-eta h) x_t + alpha_s (1 - exp(-g)) x0_t
              + alpha_s (1 - exp(-g)) / (2 r) (x0_t - x0_prev) + sigma_s sqrt(1 - exp(-2 eta h)) z.
    `eta = 1` is the SDE solver, `eta = 0` the ODE one (`sample_dpm_solver_pp`). The fresh noise
    re-draws part of x at every step, so an error of one step (a speck of ink) is not carried to the
    end unchanged as it is by the ODE; the first step is first order and the last goes straight to
    the denoised image, with no noise. `noise_below` (a share of T) keeps the fresh noise to the steps
    that leave from t / (T - 1) below it and takes the ODE's step above (eta 0 there), as EDM's
    stochastic sampler keeps its churn to a range of noise levels (Karras et al. 2022, S_tmax).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0 the ODE solver, 1 the SDE), got {eta}")
    if noise_below is not None and not 0.0 < noise_below <= 1.0:
        raise ValueError(f"noise_below is a share of T in (0, 1], got {noise_below}")
    previous_x0: torch.Tensor | None = None
    previous_h = 0.0
    levels = noise_levels(schedule, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x0, _ = denoise(x, _batched(t, x))
        abar_t, abar_s = levels[i], levels[i + 1]
        if abar_s >= 1.0:
            x = x0
        else:
            alpha_s, sigma_s, sigma_t = abar_s ** 0.5, (1 - abar_s) ** 0.5, (1 - abar_t) ** 0.5
            h = _half_log_snr(abar_s) - _half_log_snr(abar_t)
            noisy = noise_below is None or timestep_share(t, schedule.num_timesteps) < noise_below
            step_eta = eta if noisy else 0.0
            data_weight = -math.expm1(-(1 + step_eta) * h)  # 1 - exp(-(1 + eta) h)
            x = (sigma_s / sigma_t) * math.exp(-step_eta * h) * x + alpha_s * data_weight * x0
            if previous_x0 is not None:
                x = x + alpha_s * data_weight / (2 * previous_h / h) * (x0 - previous_x0)
            if step_eta > 0:
                x = x + sigma_s * (-math.expm1(-2 * step_eta * h)) ** 0.5 * noise_like(x, generator)
            previous_x0, previous_h = x0, h
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


@torch.no_grad()
def sample_consistency(denoise: DenoiseFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: NoiseSchedule, *,
                       generator: torch.Generator | None = None, callback: Callback = None) -> torch.Tensor:
    """Multistep consistency sampling, Song et al. (2023) Algorithm 1: at each visited timestep the clean
    image `x0_hat`, then fresh noise to the next level, x = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) z; the
    last step returns `x0_hat` itself. Made for a consistency-distilled student (`distill.py`), whose
    `x0_hat` is the end of the teacher's walk from any point of it; any model can be drawn this way.
    """
    levels = noise_levels(schedule, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        x0, _ = denoise(x, _batched(t, x))
        abar_s = levels[i + 1]
        x = x0 if abar_s >= 1.0 else abar_s ** 0.5 * x0 + (1 - abar_s) ** 0.5 * noise_like(x0, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


Sampler = Callable[..., torch.Tensor]
SAMPLERS: dict[str, Sampler] = {
    "consistency": sample_consistency,
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpm++2m": sample_dpm_solver_pp,
    "dpm++2m-sde": sample_dpm_solver_pp_sde,
    "unipc": sample_unipc,
}
