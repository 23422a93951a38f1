"""Samplers as pure functions with one signature, in the manner of k-diffusion's `sampling.py`:

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
from torch import nn

from .config import FEW_STEPS, SampleConfig
from .distributed import PRECISIONS, bf16_is_native, resolve_precision  # noqa: F401  (part of this module's API)
from .schedule import NoiseSchedule

Prediction = tuple[torch.Tensor, torch.Tensor]
Callback = Callable[[dict[str, Any]], None] | None


class DenoiseFn(Protocol):
    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction: ...


SPACINGS: tuple[str, ...] = ("quadratic", "linear", "logsnr")
# Where the "logsnr" spacing starts spreading its steps (`SampleConfig.log_snr_floor`): the first step
# jumps from pure noise straight to this log(abar / (1 - abar)).
LOG_SNR_FLOOR = SampleConfig.log_snr_floor


def last_timestep_for(last_of_1000: int, num_timesteps: int) -> int:
    """`SampleConfig.last_timestep` (counted on a 1000-step schedule) on a schedule of T steps: scaled
    by T / 1000, as the linear betas are, and at most T - 2 so that a walk has two levels."""
    return max(0, min(round(last_of_1000 * num_timesteps / 1000), num_timesteps - 2))


def make_timesteps(num_timesteps: int, num_inference_steps: int, spacing: str = "quadratic",
                   log_snr: torch.Tensor | None = None, last: int = 0,
                   log_snr_floor: float = LOG_SNR_FLOOR) -> torch.Tensor:
    """`num_inference_steps` distinct timesteps from T-1 down to `last` (0 unless asked), both included
    (`(N,)`, descending ints). A `last` above 0 ends the walk at a noise level the network still
    denoises well: the sampler's last step returns the clean image predicted there.

    Starting at T-1 and ending at 0 keeps the first step at pure noise and the last at the cleanest
    level (Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", sec. 3.3);
    a "leading" spacing that starts below T-1 never visits the noisiest step. Spacings:
    - "quadratic": t_i = (T-1) (1 - i/(N-1))^2, denser where the noise is low, where digits get their
      strokes (Song et al. 2021, DDIM, appendix D.2); the default of DDPM and DDIM.
    - "linear": evenly spaced in t.
    - "logsnr": evenly spaced in log(abar / (1 - abar)), needs `log_snr`; DPM-Solver's choice for
      pixel-space models (Lu et al. 2022, sec. 3.3), the default of the DPM-Solver++ and UniPC samplers.
      When log-SNR(T-1) lies below `log_snr_floor`, the first step jumps from T-1 straight to the floor
      and the other N-1 are even from there: below it (-5: signal 8% of the noise) a digit has not
      begun, and even steps there were spent on nothing (benchmarks/results/solver.md). The floor also
      keeps the cosine schedule's capped last beta (log-SNR -19.8 at T-1 against -12.9 at T-2) from
      rounding several steps onto T-1 and T-2. A floor at or below log-SNR(T-1) spreads all N evenly.
    Where the grid is finer than the integer timesteps (many steps, or steep ends of a table),
    rounding would repeat a timestep; `_strictly_descending` moves each repeat to the nearest free
    integer, so exactly N distinct steps always come back.
    """
    if not 0 <= last < num_timesteps - 1:
        raise ValueError(f"the last timestep must be in [0, {num_timesteps - 2}], got {last}")
    if not 1 <= num_inference_steps <= num_timesteps - last:
        raise ValueError(f"steps must be between 1 and {num_timesteps - last}, got {num_inference_steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
    if not math.isfinite(log_snr_floor):
        raise ValueError(f"the log-SNR floor must be a finite number, got {log_snr_floor}")
    if num_inference_steps == 1:
        return torch.tensor([num_timesteps - 1])
    fraction = torch.linspace(1, 0, num_inference_steps, dtype=torch.float64)  # 1 -> 0
    if spacing == "linear":
        steps = last + fraction * (num_timesteps - 1 - last)
    elif spacing == "quadratic":
        steps = last + fraction ** 2 * (num_timesteps - 1 - last)
    else:
        if log_snr is None:
            raise ValueError("logsnr spacing needs the schedule's log_snr table")
        table = log_snr.double()
        jump = log_snr_floor > float(table[-1])
        lowest = log_snr_floor if jump else float(table[-1])
        if jump:  # T-1, then N-1 even steps from the floor
            fraction = torch.linspace(1, 0, num_inference_steps - 1, dtype=torch.float64)
        targets = lowest + (1 - fraction) * (table[last] - lowest)  # rising log-SNR
        steps = (table[None, :] - targets[:, None]).abs().argmin(dim=1).double()
        steps = torch.cat([torch.tensor([num_timesteps - 1.0], dtype=torch.float64), steps]) if jump else steps
        steps[0] = num_timesteps - 1
    return _strictly_descending(steps.round().long(), num_timesteps) if last == 0 else \
        _strictly_descending(steps.round().long() - last, num_timesteps - last) + last


def _strictly_descending(steps: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """Make rounded steps `(N,)` strictly descending from T-1 to 0, changing only repeated ones.

    A backward pass lifts each step above the one after it (the last is 0); a forward pass lowers
    each below the one before it (the first is T-1). Both bounds stay feasible because N <= T.
    """
    result = steps.tolist()
    result[-1] = 0
    for i in range(len(result) - 2, -1, -1):
        result[i] = max(result[i], result[i + 1] + 1)
    result[0] = num_timesteps - 1
    for i in range(1, len(result)):
        result[i] = min(result[i], result[i - 1] - 1)
    return torch.tensor(result)


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
    history: list[torch.Tensor] = []  # the network's x0 at each visited level
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
        history.append(x0)
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
                             callback: Callback = None, eta: float = 1.0) -> torch.Tensor:
    """SDE-DPM-Solver++(2M): DPM-Solver++'s second-order multistep update for the reverse SDE (Lu et
    al. 2022, "DPM-Solver++", sec. 5 and appendix; k-diffusion's `sample_dpmpp_2m_sde`, midpoint form).

    With lambda = log(alpha / sigma), h = lambda_s - lambda_t and g = (1 + eta) h:
        x_s = (sigma_s / sigma_t) exp(-eta h) x_t + alpha_s (1 - exp(-g)) x0_t
              + alpha_s (1 - exp(-g)) / (2 r) (x0_t - x0_prev) + sigma_s sqrt(1 - exp(-2 eta h)) z.
    `eta = 1` is the SDE solver, `eta = 0` the ODE one (`sample_dpm_solver_pp`). The fresh noise
    re-draws part of x at every step, so an error of one step (a speck of ink) is not carried to the
    end unchanged as it is by the ODE; the first step is first order and the last goes straight to
    the denoised image, with no noise.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1] (0 the ODE solver, 1 the SDE), got {eta}")
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
            h = 0.5 * math.log(abar_s / (1 - abar_s)) - 0.5 * math.log(abar_t / (1 - abar_t))
            data_weight = -math.expm1(-(1 + eta) * h)  # 1 - exp(-(1 + eta) h)
            x = (sigma_s / sigma_t) * math.exp(-eta * h) * x + alpha_s * data_weight * x0
            if previous_x0 is not None:
                x = x + alpha_s * data_weight / (2 * previous_h / h) * (x0 - previous_x0)
            if eta > 0:
                x = x + sigma_s * (-math.expm1(-2 * eta * h)) ** 0.5 * noise_like(x, generator)
            previous_x0, previous_h = x0, h
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": x0})
    return x


Sampler = Callable[..., torch.Tensor]
SAMPLERS: dict[str, Sampler] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "dpm++2m": sample_dpm_solver_pp,
    "dpm++2m-sde": sample_dpm_solver_pp_sde,
    "unipc": sample_unipc,
}
# The defaults live in `config.SampleConfig`, the one place the CLI, the page and the API read.
DEFAULT_SAMPLER = SampleConfig.sampler
# DDPM's ancestral steps are first order with fresh noise each step, so it takes every timestep by
# default (`default_steps`); the few-step samplers take `DEFAULT_STEPS`.
DEFAULT_STEPS = FEW_STEPS
DEFAULT_GUIDANCE = SampleConfig.guidance
# Largest guidance weight accepted: far past any useful value (the sweep above found w = 3 already
# costs much variety) while refusing nonsense such as 1e308, which drew pure noise.
MAX_GUIDANCE = 20.0
DEFAULT_BATCH_SIZE = SampleConfig.batch_size
# Each sampler's best spacing on the analytic Gaussian tests (tests/test_sampling.py).
DEFAULT_SPACING: dict[str, str] = {"ddpm": "quadratic", "ddim": "quadratic", "dpm++2m": "logsnr",
                                   "dpm++2m-sde": "logsnr", "unipc": "logsnr"}


def default_steps(sampler: str, num_timesteps: int) -> int:
    """Steps a sampler takes when none are asked for: every timestep for ddpm, else `DEFAULT_STEPS`."""
    return num_timesteps if sampler == "ddpm" else min(DEFAULT_STEPS, num_timesteps)


GuidanceInterval = tuple[float, float]


# Guidance matters where the digit's identity forms; at the noisiest levels it costs variety and at
# the cleanest it does little (Kynkaanniemi et al. 2024). With 8 steps the default interval guides
# t/T = 0.674 and 0.440: 10 network passes per digit.
DEFAULT_GUIDANCE_INTERVAL: GuidanceInterval | None = SampleConfig.guidance_interval


def guided_at(t: int, num_timesteps: int, interval: GuidanceInterval | None) -> bool:
    """Whether guidance applies at timestep `t`: always without an interval, else when t / (T - 1)
    lies in [low, high] (guidance in a limited interval of noise levels, Kynkaanniemi et al. 2024)."""
    if interval is None:
        return True
    return interval[0] <= t / (num_timesteps - 1) <= interval[1]


def check_interval(interval: GuidanceInterval | None) -> None:
    if interval is not None and not 0.0 <= interval[0] <= interval[1] <= 1.0:
        raise ValueError(f"a guidance interval is (low, high) with 0 <= low <= high <= 1 (shares of T), "
                         f"got {interval}")


def uses_two_branches(conditional: bool, guidance: float, learned_guidance: bool = False) -> bool:
    """Whether guidance mixes a conditional and an unconditional branch: w other than 0 and 1, and
    not a w >= 1 that a network with a guidance input (`ModelConfig.guidance_input`) takes directly."""
    if learned_guidance and guidance >= 1.0:
        return False
    return conditional and guidance not in (0.0, 1.0)


def network_passes_per_digit(steps: int, conditional: bool, guidance: float, guided_steps: int | None = None,
                             learned_guidance: bool = False) -> int:
    """What one digit costs, counted honestly: each step is one network evaluation per branch.

    Every sampler here evaluates the network once per visited timestep, the last (t = 0) included:
    for DDIM and DPM-Solver++ that last evaluation is the final denoise to the clean image. Guidance
    runs the conditional and the unconditional branch in one batched call, which is two passes, on
    `guided_steps` of the steps (all of them unless a guidance interval limits it). A network trained
    with guidance as an input (`learned_guidance`) draws w >= 1 in one pass.
    """
    if not uses_two_branches(conditional, guidance, learned_guidance):
        return steps
    return steps + (steps if guided_steps is None else guided_steps)


def guided_step_count(timesteps: torch.Tensor, num_timesteps: int, interval: GuidanceInterval | None) -> int:
    return sum(guided_at(t, num_timesteps, interval) for t in timesteps.tolist())


def count_passes(schedule: NoiseSchedule, sampler: str, steps: int, conditional: bool, guidance: float,
                 interval: GuidanceInterval | None, learned_guidance: bool = False, *, last: int = 0,
                 log_snr_floor: float = LOG_SNR_FLOOR) -> int:
    """`network_passes_per_digit` for what `generate` would run: the sampler's own timesteps (ending at
    `last`) decide how many steps fall in the guidance interval."""
    timesteps = make_timesteps(schedule.num_timesteps, steps, DEFAULT_SPACING[sampler], schedule.log_snr, last,
                               log_snr_floor)
    guided = guided_step_count(timesteps, schedule.num_timesteps, interval)
    return network_passes_per_digit(steps, conditional, guidance, guided, learned_guidance)


def describe_passes(steps: int, passes: int, learned_guidance: bool = False) -> str:
    """'8 steps, 2 branches on 2 of them (guidance interval) = 10 network passes per digit', or the like."""
    if passes == steps:
        how = "1 branch (guidance, if any, is the network's input)" if learned_guidance else "1 branch"
    elif passes == 2 * steps:
        how = "2 branches (guidance)"
    else:
        how = f"2 branches on {passes - steps} of them (guidance interval)"
    return f"{steps} steps, {how} = {passes} network passes per digit"


class Denoiser:
    """Turn a network into `denoise(x_t, t) -> (x0_hat, eps_hat)`.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6, written with the unconditional output as
    the base): out = out_uncond + w (out_cond - out_uncond), so w = 0 is unconditional and w = 1
    purely conditional; both branches run in one batched forward pass. With `guidance_interval`
    the guided output is used only at those noise levels (`guided_at`) and the conditional branch
    alone elsewhere, one pass instead of two. A network trained with guidance as an input
    (`ModelConfig.guidance_input`) gives the guided output of any w >= 1 in one pass, at
    guidance_beta = 1 / w; w in (0, 1) still mixes two branches. `clip` clamps x0_hat to [-1, 1] (the data range) and
    re-derives eps_hat from it, as DDPM's reference sampler does. `precision="bf16"` runs the network
    under bfloat16 autocast and takes its output back to fp32 (see `PRECISIONS`).

    Autoguidance (Karras et al. 2024): with a `guide` network, a weaker model of the same data (an
    earlier snapshot of the same run, or a smaller net), the base of the guided output is the
    guide's conditional output instead of the unconditional one: out = guide + w (cond - guide).
    It pushes away from what the weak model gets wrong rather than towards the class.
    """

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, labels: torch.Tensor | None = None,
                 guidance: float = 1.0, clip: bool = True, guidance_interval: GuidanceInterval | None = None,
                 precision: str = "fp32", guide: nn.Module | None = None) -> None:
        if not 0 <= guidance <= MAX_GUIDANCE:
            raise ValueError(f"guidance must be in [0, {MAX_GUIDANCE:g}], got {guidance}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        check_interval(guidance_interval)
        self.model, self.schedule, self.labels, self.guidance, self.clip = model, schedule, labels, guidance, clip
        self.guidance_interval, self.guide = guidance_interval, guide
        num_classes = getattr(getattr(model, "config", None), "num_classes", 0)
        self.learned_guidance = getattr(getattr(model, "config", None), "guidance_input", False)
        self.null_label = num_classes
        if labels is not None:
            check_labels(labels, num_classes)

    def _null_labels(self, like: torch.Tensor) -> torch.Tensor:
        """"No label" for each row of `like`: the null index, or its one-hot row for label weights."""
        if like.is_floating_point():
            return torch.nn.functional.one_hot(torch.full(like.shape[:1], self.null_label, device=like.device),
                                               self.null_label + 1).to(like.dtype)
        return torch.full_like(like, self.null_label)

    def _output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.labels is None or self.guidance == 0:
            null = torch.full_like(t, self.null_label) if self.null_label else None
            return self.model(x, t, null)
        guided_here = guided_at(int(t[0]), self.schedule.num_timesteps, self.guidance_interval)
        if self.guidance == 1 or not guided_here:
            return self.model(x, t, self.labels)
        if self.guide is not None:
            base = self.guide(x, t, self.labels)
            return base + self.guidance * (self.model(x, t, self.labels) - base)
        if self.learned_guidance and self.guidance > 1:
            return self.model(x, t, self.labels, torch.full(t.shape, 1 / self.guidance, device=x.device))
        null = self._null_labels(self.labels)
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            output = self._output(x, t)
        x0, eps = self.schedule.to_x0_eps(x, t, output.float())
        if self.clip:
            x0 = x0.clamp(-1.0, 1.0)
            eps = self.schedule.eps_from_x0(x, t, x0)
        return x0, eps


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """`ValueError` unless `labels` is a 1-D integer tensor of classes this model knows, or finite
    label weights shaped `(B, num_classes + 1)` (see `UNet.forward`)."""
    if num_classes == 0:
        raise ValueError("this model is unconditional; it cannot be asked for a digit")
    if labels.is_floating_point():
        if labels.ndim != 2 or labels.shape[1] != num_classes + 1 or not torch.isfinite(labels).all():
            raise ValueError(f"label weights must be finite and shaped (B, {num_classes + 1}), "
                             f"got {tuple(labels.shape)}")
        return
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D tensor of integers, got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        bad = int(labels.max()) if int(labels.max()) >= num_classes else int(labels.min())
        raise ValueError(f"digit {bad} is not one of this model's {num_classes} classes (0-{num_classes - 1})")


def check_guide(guide: nn.Module, model: nn.Module) -> None:
    """`ValueError` unless `guide` draws the images and classes `model` does (autoguidance)."""
    mine, theirs = model.config, guide.config  # type: ignore[attr-defined]
    for name in ("image_size", "in_channels", "num_classes"):
        if getattr(mine, name) != getattr(theirs, name):
            raise ValueError(f"the guide network's {name} is {getattr(theirs, name)}, "
                             f"the model's {getattr(mine, name)}")


def generate(model: nn.Module, schedule: NoiseSchedule, num: int, *, labels: torch.Tensor | None = None,
             guidance: float = 1.0, sampler: str = DEFAULT_SAMPLER, steps: int | None = None,
             spacing: str | None = None,
             generator: torch.Generator | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
             device: torch.device | str = "cpu",
             callback: Callback = None, clip: bool = True, sampler_kwargs: dict[str, Any] | None = None,
             noise: torch.Tensor | None = None, guidance_interval: GuidanceInterval | None = None,
             precision: str = "fp32", last_timestep: int = 0, guide: nn.Module | None = None,
             log_snr_floor: float = LOG_SNR_FLOOR) -> torch.Tensor:
    """Generate `num` images `(num, C, S, S)` in [-1, 1] at the size the model was trained at.

    `labels` `(num,)` asks for digits (conditional models); `None` samples unconditionally.
    `steps=None` means the sampler's default (`default_steps`); `spacing=None` its own spacing. Initial noise
    comes from `generator` (CPU by default) so the same seed gives the same digits on any device,
    unless `noise` `(num, C, S, S)` gives it (interpolation does, to walk between two seeds' noise).
    `precision` is the network's arithmetic, "fp32" or "bf16" (`PRECISIONS`; `resolve_precision` picks for a device).
    `guide` is autoguidance's weaker network (see `Denoiser`), of the same image size and classes.
    """
    if num < 1:
        raise ValueError(f"number of samples must be at least 1, got {num}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if labels is not None and len(labels) != num:
        raise ValueError(f"got {len(labels)} labels for {num} samples")
    if noise is not None and tuple(noise.shape) != (num, model.config.in_channels, model.config.image_size,
                                                    model.config.image_size):
        raise ValueError(f"noise must be shaped like the {num} images, got {tuple(noise.shape)}")
    config = model.config  # type: ignore[attr-defined]
    if guide is not None:
        check_guide(guide, model)
        guide = guide.to(device).eval()
    timesteps = make_timesteps(schedule.num_timesteps, steps or default_steps(sampler, schedule.num_timesteps),
                               spacing or DEFAULT_SPACING[sampler], schedule.log_snr, last=last_timestep,
                               log_snr_floor=log_snr_floor)
    sample_fn = SAMPLERS[sampler]
    model = model.to(device).eval()
    outputs = []
    for start in range(0, num, batch_size):
        count = min(batch_size, num - start)
        shape = (count, config.in_channels, config.image_size, config.image_size)
        x = (noise[start:start + count] if noise is not None else torch.randn(shape, generator=generator)).to(device)
        batch_labels = labels[start:start + count].to(device) if labels is not None else None
        denoise = Denoiser(model, schedule, batch_labels, guidance, clip, guidance_interval, precision, guide)
        outputs.append(sample_fn(denoise, x, timesteps, schedule, generator=generator, callback=callback,
                                 **(sampler_kwargs or {})).cpu())
    return torch.cat(outputs)
