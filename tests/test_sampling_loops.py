"""Whole sampling loops on the tiny checkpoint against an independent float64 re-implementation of
each paper's update, with guidance in an interval: every step of every sampler, the guidance mix
and the noise draws are checked at once, so a change to any of them shows here."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.sampling import DEFAULT_SPACING, generate, make_timesteps
from mnist_diffusion.schedule import NoiseSchedule

from conftest import plain

GUIDANCE, INTERVAL, STEPS = 2.0, (0.2, 0.6), 6


def reference(model, schedule: NoiseSchedule, labels: torch.Tensor, sampler: str, seed: int,
              eta: float = 0.0, noise_below: float | None = None) -> torch.Tensor:
    """The sampler written out from its paper, in float64, calling the network directly; the SDE
    solver's fresh noise only on the steps leaving from below `noise_below` (a share of T)."""
    timesteps = make_timesteps(schedule.num_timesteps, STEPS, DEFAULT_SPACING[sampler], schedule.log_snr).tolist()
    abar = [float(schedule.alphas_cumprod64[t]) for t in timesteps] + [1.0]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((len(labels), 1, 28, 28), generator=generator).double()
    null = torch.full_like(labels, model.config.num_classes)
    previous_x0, previous_h = None, 0.0
    lambdas, x0s, start = [0.5 * math.log(a / (1 - a)) for a in abar[:-1]], [], x
    for i, t in enumerate(timesteps):
        batch_t = torch.full((len(labels),), t)
        with torch.no_grad():
            cond = model(x.float(), batch_t, labels).double()
            uncond = model(x.float(), batch_t, null).double()
        guided = INTERVAL[0] <= t / (schedule.num_timesteps - 1) <= INTERVAL[1]  # Kynkaanniemi et al. 2024
        eps = uncond + GUIDANCE * (cond - uncond) if guided else cond  # Ho & Salimans 2022, eq. 6
        a_t, a_s = abar[i], abar[i + 1]
        x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)  # Ho et al. 2020, eq. 15
        eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        if sampler == "unipc" and x0s and a_s < 1.0:  # UniC-p, Zhao et al. 2023, Algorithm 2, B(h) = e^h - 1
            h = lambdas[i] - lambdas[i - 1]
            hh, order = -h, min(len(x0s), 2)  # data prediction; the order of the step it corrects
            phi = math.expm1(hh)
            g, b = phi / hh - 1, []
            for k in range(1, order + 1):  # b_k = (k! h phi_{k+1}(hh) / hh^k) / B(h), recursively
                b.append(g * math.factorial(k) / phi)
                g = g / hh - 1 / math.factorial(k + 1)
            rks = [(lambdas[i - 2] - lambdas[i - 1]) / h] if order == 2 else []
            diffs = [(x0s[-2] - x0s[-1]) / rks[0]] if order == 2 else []
            if order == 1:
                rhos = [0.5]
            else:
                system = torch.tensor([[rk ** k for rk in [*rks, 1.0]] for k in range(order)], dtype=torch.float64)
                rhos = torch.linalg.solve(system, torch.tensor(b, dtype=torch.float64)).tolist()
            correction = sum(rho * d for rho, d in zip(rhos, [*diffs, x0 - x0s[-1]], strict=True))
            x = math.sqrt((1 - a_t) / (1 - abar[i - 1])) * start - math.sqrt(a_t) * phi * (x0s[-1] + correction)
        x0s.append(x0)
        start = x
        if a_s == 1.0:
            x = x0
        elif sampler == "ddpm":  # Ho et al. 2020, eqs. 6-7, respaced
            beta = 1 - a_t / a_s
            mean = (math.sqrt(a_s) * beta * x0 + math.sqrt(1 - beta) * (1 - a_s) * x) / (1 - a_t)
            x = mean + math.sqrt(beta * (1 - a_s) / (1 - a_t)) * torch.randn(x.shape, generator=generator).double()
        elif sampler == "consistency":  # Song et al. 2023, Algorithm 1: the clean image, noised afresh
            x = math.sqrt(a_s) * x0 + math.sqrt(1 - a_s) * torch.randn(x.shape, generator=generator).double()
        elif sampler == "ddim":  # Song et al. 2021, eqs. 12 and 16
            sigma = eta * math.sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
            x = math.sqrt(a_s) * x0 + math.sqrt(1 - a_s - sigma ** 2) * eps
            if sigma > 0:
                x = x + sigma * torch.randn(x.shape, generator=generator).double()
        else:  # DPM-Solver++(2M), Lu et al. 2022, Algorithm 2 (UniPC's predictor); SDE variant with eta
            lam_t, lam_s = 0.5 * math.log(a_t / (1 - a_t)), 0.5 * math.log(a_s / (1 - a_s))
            h = lam_s - lam_t
            share = t / (schedule.num_timesteps - 1)
            noisy = sampler == "dpm++2m-sde" and (noise_below is None or share < noise_below)
            noise_eta = eta if noisy else 0.0
            data = 1 - math.exp(-(1 + noise_eta) * h)
            d = x0 if previous_x0 is None else x0 + (x0 - previous_x0) * h / (2 * previous_h)
            x = math.sqrt((1 - a_s) / (1 - a_t)) * math.exp(-noise_eta * h) * x + math.sqrt(a_s) * data * d
            if noise_eta > 0:
                z = torch.randn(x.shape, generator=generator).double()
                x = x + math.sqrt(1 - a_s) * math.sqrt(1 - math.exp(-2 * noise_eta * h)) * z
            previous_x0, previous_h = x0, h
    return x.float()


@pytest.mark.parametrize(("sampler", "eta", "noise_below"),
                         [("consistency", None, None), ("ddpm", None, None), ("ddim", None, None),
                          ("ddim", 0.7, None), ("dpm++2m", None, None),
                          ("dpm++2m-sde", 1.0, None), ("dpm++2m-sde", 1.0, 0.45), ("unipc", None, None)])
def test_each_sampler_loop_matches_its_paper(tiny_checkpoint: Path, sampler: str, eta: float | None,
                                             noise_below: float | None) -> None:
    checkpoint = load_checkpoint(tiny_checkpoint)
    model, schedule = checkpoint.build_model(), NoiseSchedule(checkpoint.diffusion_config)
    torch.manual_seed(1)
    with torch.no_grad():  # weights off their zero initialisations, so labels (and guidance) move digits
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    labels = torch.tensor([0, 3, 7, 9])
    with torch.no_grad():
        x, t = torch.randn(4, 1, 28, 28), torch.full((4,), 20)
        null = torch.full_like(labels, model.config.num_classes)
        assert (model(x, t, labels) - model(x, t, null)).abs().max() > 1e-2
    stochastic = {name: value for name, value in (("eta", eta), ("noise_below", noise_below)) if value is not None}
    settings = plain(guidance=GUIDANCE, sampler=sampler, steps=STEPS, guidance_interval=INTERVAL, **stochastic)
    drawn = generate(model, schedule, 4, settings, labels=labels, generator=torch.Generator().manual_seed(5))
    expected = reference(model, schedule, labels, sampler, seed=5, eta=eta or 0.0, noise_below=noise_below)
    timesteps = make_timesteps(schedule.num_timesteps, STEPS, DEFAULT_SPACING[sampler], schedule.log_snr)
    shares = timesteps.double() / (schedule.num_timesteps - 1)
    assert ((shares >= INTERVAL[0]) & (shares <= INTERVAL[1])).any() and (shares > INTERVAL[1]).any()
    if noise_below is not None:  # steps on both sides of the share, the last (noise-free) one aside
        assert (shares[:-1] < noise_below).any() and (shares[:-1] >= noise_below).any()
    assert drawn.abs().max() > 0.05  # the loop drew something: not a trivial zero
    torch.testing.assert_close(drawn, expected, rtol=0, atol=2e-4)
