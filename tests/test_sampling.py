from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mnist_diffusion import devices
from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.config import FEW_STEPS, DiffusionConfig, preset
from mnist_diffusion.devices import resolve_precision
from mnist_diffusion.sampling import (
    DEFAULT_SPACING,
    SPACINGS,
    Denoiser,
    Guidance,
    count_passes,
    default_steps,
    generate,
    guided_at,
    make_timesteps,
)
from mnist_diffusion.schedule import NoiseSchedule
from mnist_diffusion.solvers import (
    SAMPLERS,
    sample_ddim,
    sample_ddpm,
    sample_dpm_solver_pp,
    sample_dpm_solver_pp_sde,
)
from mnist_diffusion.unet import UNet

from conftest import plain


def gaussian_denoiser(schedule: NoiseSchedule, mean: float, std: float):
    """The exact posterior mean E[x0 | x_t] for data ~ N(mean, std^2) per pixel, and its eps."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = schedule.alphas_cumprod64[t].view(-1, 1, 1, 1)
        a, var = abar.sqrt(), std ** 2
        x64 = x.double()
        x0 = mean + a * var / (abar * var + 1 - abar) * (x64 - a * mean)
        eps = (x64 - a * x0) / (1 - abar).sqrt()
        return x0.float(), eps.float()

    return denoise


SCHEDULE = NoiseSchedule(DiffusionConfig())


def run(name: str, denoise, steps: int, num: int = 20_000, seed: int = 0, **kwargs) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(num, 1, 1, 1, generator=generator)
    timesteps = make_timesteps(1000, steps, DEFAULT_SPACING[name], SCHEDULE.log_snr)
    return SAMPLERS[name](denoise, x, timesteps, SCHEDULE, generator=generator, **kwargs)


# (sampler, steps, relative tolerance on the std). The mean must be within 0.02 everywhere (the
# sampling error of 20k draws is ~0.004). DPM-Solver++ is second order and tight at 10 steps;
# DDIM is first order (error ~1/N: 8% measured at 20 steps, 3% at 50); DDPM needs every step.
TOLERANCES = [("dpm++2m", 10, 0.06), ("dpm++2m", 20, 0.04), ("unipc", 10, 0.06), ("unipc", 20, 0.04),
              ("ddim", 20, 0.10), ("ddim", 50, 0.04),
              ("ddpm", 1000, 0.04)]


@pytest.mark.parametrize(("name", "steps", "tolerance"), TOLERANCES)
@pytest.mark.parametrize(("mean", "std"), [(0.3, 0.5), (-0.2, 0.8)])
def test_sampler_recovers_a_gaussian(name: str, steps: int, tolerance: float, mean: float, std: float) -> None:
    """Driven by the exact predictor E[x0 | x_t] of N(mean, std^2) data, samples match that law."""
    samples = run(name, gaussian_denoiser(SCHEDULE, mean, std), steps, num=20_000 if steps < 1000 else 4000)
    assert samples.mean().item() == pytest.approx(mean, abs=0.02 if steps < 1000 else 0.04)
    assert samples.std().item() == pytest.approx(std, rel=tolerance)


def test_ddim_with_eta_one_is_ddpm() -> None:
    """Song et al. (2021), sec. 4.1: eta = 1 gives the DDPM posterior; same noise, same samples."""
    denoise = gaussian_denoiser(SCHEDULE, 0.1, 0.5)
    timesteps = make_timesteps(1000, 30)
    outputs = []
    for sampler, kwargs in ((sample_ddpm, {}), (sample_ddim, {"eta": 1.0})):
        generator = torch.Generator().manual_seed(3)
        x = torch.randn(500, 1, 1, 1, generator=generator)
        outputs.append(sampler(denoise, x, timesteps, SCHEDULE, generator=generator, **kwargs))
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-4, rtol=1e-4)


def point_denoiser(schedule: NoiseSchedule, point: float):
    """The exact denoiser when every data point is `point`: x0 = point, eps re-derived from x_t."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = schedule.alphas_cumprod64[t].view(-1, 1, 1, 1)
        x0 = torch.full_like(x, point)
        return x0, ((x.double() - abar.sqrt() * point) / (1 - abar).sqrt()).float()

    return denoise


def abar_after_each_step(timesteps: torch.Tensor) -> torch.Tensor:
    """alpha-bar of the level each step lands on: the next timestep's, then 1 (the clean image)."""
    return torch.cat([SCHEDULE.alphas_cumprod64[timesteps[1:]], torch.ones(1, dtype=torch.float64)])


@pytest.mark.parametrize("name", ["ddim", "dpm++2m", "unipc"])
def test_deterministic_samplers_follow_the_exact_ode_path_of_a_single_point(name: str) -> None:
    """For data that is one point p the probability-flow ODE is solved exactly by
    x_s = sqrt(abar_s) p + sqrt(1 - abar_s) eps_T: eps stays the starting noise's (DDIM, eq. 12 of
    Song et al. 2021) and the data prediction is constant (DPM-Solver++'s correction term vanishes).
    Every intermediate state must sit on that path, not only the last."""
    point, generator = 0.42, torch.Generator().manual_seed(0)
    timesteps = make_timesteps(1000, 10, DEFAULT_SPACING[name], SCHEDULE.log_snr)
    x_start = torch.randn(256, 1, 1, 1, generator=generator)
    abar_start = SCHEDULE.alphas_cumprod64[timesteps[0]]
    eps = (x_start.double() - abar_start.sqrt() * point) / (1 - abar_start).sqrt()
    states: list[torch.Tensor] = []
    SAMPLERS[name](point_denoiser(SCHEDULE, point), x_start, timesteps, SCHEDULE,
                   callback=lambda info: states.append(info["x"]))
    for state, abar in zip(states, abar_after_each_step(timesteps).tolist(), strict=True):
        expected = abar ** 0.5 * point + (1 - abar) ** 0.5 * eps
        torch.testing.assert_close(state.double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["ddpm", "dpm++2m-sde"])
def test_stochastic_samplers_keep_the_forward_marginals_of_a_single_point(name: str) -> None:
    """Sampling from x_T ~ N(sqrt(abar_T) p, 1 - abar_T) with the exact data prediction of one point p
    keeps every x_s distributed as q(x_s | x_0 = p) = N(sqrt(abar_s) p, 1 - abar_s). For DDPM the
    posterior mean and variance of Ho et al. (2020), eqs. (6)-(7), both enter; for the SDE solver each
    step maps N(alpha_t p, sigma_t^2) onto N(alpha_s p, sigma_s^2) exactly, noise term included. A wrong
    variance shows in the std at every step."""
    point, generator = 0.42, torch.Generator().manual_seed(0)
    timesteps = make_timesteps(1000, 10, DEFAULT_SPACING[name], SCHEDULE.log_snr)
    abar_start = SCHEDULE.alphas_cumprod64[timesteps[0]].item()
    noise = torch.randn(20_000, 1, 1, 1, generator=generator)
    x_start = abar_start ** 0.5 * point + (1 - abar_start) ** 0.5 * noise
    states: list[torch.Tensor] = []
    SAMPLERS[name](point_denoiser(SCHEDULE, point), x_start, timesteps, SCHEDULE, generator=generator,
                   callback=lambda info: states.append(info["x"]))
    for state, abar in zip(states[:-1], abar_after_each_step(timesteps).tolist()[:-1], strict=True):
        assert state.mean().item() == pytest.approx(abar ** 0.5 * point, abs=0.03)
        assert state.std().item() == pytest.approx((1 - abar) ** 0.5, rel=0.03)
    assert torch.equal(states[-1], torch.full_like(states[-1], point))


def reference_dpm_solver_pp_2m(denoise, x: torch.Tensor, timesteps: torch.Tensor,
                               alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M) written straight from Algorithm 2 of Lu et al. (2022), in float64, with the
    clean image appended as the last time point (alpha = 1, sigma = 0, lambda = +inf)."""
    abar = torch.cat([alphas_cumprod[timesteps], torch.ones(1, dtype=torch.float64)])
    alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
    lam = torch.log(alpha / sigma)  # +inf at the clean end
    x = x.double()
    data_predictions: list[torch.Tensor] = []
    for i in range(1, len(abar)):
        t = torch.full((x.shape[0],), int(timesteps[i - 1]))
        data_predictions.append(denoise(x.float(), t)[0].double())
        h = lam[i] - lam[i - 1]
        if i == 1 or i == len(abar) - 1:  # the first step and the step to lambda = inf: first order
            d = data_predictions[-1]
        else:
            r = (lam[i - 1] - lam[i - 2]) / h
            d = (1 + 1 / (2 * r)) * data_predictions[-1] - 1 / (2 * r) * data_predictions[-2]
        x = sigma[i] / sigma[i - 1] * x - alpha[i] * torch.expm1(-h) * d
    return x


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_dpm_solver_pp_matches_an_independent_implementation_of_the_paper(steps: int) -> None:
    denoise = gaussian_denoiser(SCHEDULE, 0.3, 0.5)
    x = torch.randn(2000, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    timesteps = make_timesteps(1000, steps, "logsnr", SCHEDULE.log_snr)
    ours = sample_dpm_solver_pp(denoise, x, timesteps, SCHEDULE)
    reference = reference_dpm_solver_pp_2m(denoise, x, timesteps, SCHEDULE.alphas_cumprod64)
    torch.testing.assert_close(ours.double(), reference, atol=1e-6, rtol=1e-6)


def test_the_sde_solver_without_noise_is_the_ode_solver() -> None:
    denoise = gaussian_denoiser(SCHEDULE, 0.3, 0.5)
    x = torch.randn(500, 1, 1, 1, generator=torch.Generator().manual_seed(0))
    timesteps = make_timesteps(1000, 10, "logsnr", SCHEDULE.log_snr)
    torch.testing.assert_close(sample_dpm_solver_pp_sde(denoise, x, timesteps, SCHEDULE, eta=0.0),
                               sample_dpm_solver_pp(denoise, x, timesteps, SCHEDULE), atol=1e-5, rtol=1e-5)


def test_the_sde_solver_draws_gaussian_data_with_its_mean_and_spread() -> None:
    """Data ~ N(0.3, 0.5^2) with its exact denoiser: 20 SDE steps from pure noise end at that law."""
    x = torch.randn(20_000, 1, 1, 1, generator=torch.Generator().manual_seed(1))
    timesteps = make_timesteps(1000, 20, "logsnr", SCHEDULE.log_snr)
    out = sample_dpm_solver_pp_sde(gaussian_denoiser(SCHEDULE, 0.3, 0.5), x, timesteps, SCHEDULE,
                                   generator=torch.Generator().manual_seed(2))
    assert out.mean().item() == pytest.approx(0.3, abs=0.02)
    assert out.std().item() == pytest.approx(0.5, rel=0.03)


def test_timesteps_run_from_noisiest_to_cleanest() -> None:
    assert make_timesteps(1000, 5, "linear").tolist() == [999, 749, 500, 250, 0]
    assert make_timesteps(1000, 5, "quadratic").tolist() == [999, 562, 250, 62, 0]
    assert make_timesteps(1000, 1000).tolist() == list(range(999, -1, -1))
    with pytest.raises(ValueError, match="between 1 and 1000"):
        make_timesteps(1000, 0)
    with pytest.raises(ValueError, match="unknown spacing"):
        make_timesteps(1000, 10, "cubic")


SCHEDULES = {"linear": SCHEDULE, "cosine": NoiseSchedule(DiffusionConfig(beta_schedule="cosine")),
             "linear T=300": NoiseSchedule(DiffusionConfig(num_timesteps=300))}


@pytest.mark.parametrize("schedule_name", sorted(SCHEDULES))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_asking_for_n_steps_gives_n_distinct_steps(schedule_name: str, spacing: str) -> None:
    """Rounding a fine grid onto integer timesteps used to repeat some (the cosine schedule's
    log-SNR spacing gave 9 distinct steps for 10, 38 for 50): every step count must be honoured."""
    schedule = SCHEDULES[schedule_name]
    T = schedule.num_timesteps
    for steps in (2, 5, 10, 20, 50, 100, T // 2, T - 1, T):
        timesteps = make_timesteps(T, steps, spacing, schedule.log_snr)
        assert len(timesteps) == steps, (steps, timesteps.tolist())
        assert timesteps[0] == T - 1 and timesteps[-1] == 0
        assert torch.all(timesteps[1:] < timesteps[:-1]), timesteps.tolist()


@pytest.mark.parametrize("schedule_name", ["linear", "cosine"])
def test_logsnr_spacing_is_even_in_log_snr(schedule_name: str) -> None:
    """After the first step (always T-1, whatever its log-SNR), the steps are evenly spaced in log-SNR
    up to rounding to integer t; for the cosine schedule this needs the capped last beta set aside."""
    schedule = SCHEDULES[schedule_name]
    timesteps = make_timesteps(1000, 10, "logsnr", schedule.log_snr)
    gaps = schedule.log_snr.double()[timesteps[1:]].diff()
    assert gaps.max() / gaps.min() < 1.5, timesteps.tolist()


def test_ddpm_adds_no_noise_at_the_last_step() -> None:
    """The last step must return the model's x0 prediction itself, not x0 plus noise."""
    seen = []
    denoise = gaussian_denoiser(SCHEDULE, 0.0, 0.5)
    out = sample_ddpm(denoise, torch.randn(64, 1, 1, 1), make_timesteps(1000, 1000), SCHEDULE,
                      generator=torch.Generator().manual_seed(0), callback=seen.append)
    assert seen[-1]["t"] == 0
    assert torch.equal(out, seen[-1]["x0"])


def test_samples_have_the_size_the_model_was_trained_at() -> None:
    """A model trained on 32x32 must be sampled at 32x32: the size is read from its config, never assumed."""
    model = UNet(preset("tiny", image_size=32))
    images = generate(model, NoiseSchedule(DiffusionConfig(num_timesteps=20)), 3, plain(steps=4))
    assert images.shape == (3, 1, 32, 32)


def test_auto_threads_are_decided_again_before_each_network_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under "auto" threads the count follows `AutoThreads.decide` batch by batch (scripted here: a core
    taken after the first batch, given back after the second); a number asked for is never changed."""
    decisions = iter([2, 1, 2])

    class Scripted:
        def decide(self, current: int) -> int:
            return next(decisions)

    seen: list[int] = []
    record = lambda _: seen.append(torch.get_num_threads())  # noqa: E731 - the count at each step
    model, schedule = UNet(preset("tiny")), NoiseSchedule(DiffusionConfig(num_timesteps=20))
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(devices, "_auto", Scripted())
        generate(model, schedule, 3, plain(steps=2, max_batch=1), callback=record)
        assert seen == [2, 2, 1, 1, 2, 2]
        torch.set_num_threads(devices.choose_threads(1))  # a number: nothing is decided again
        generate(model, schedule, 2, plain(steps=1, max_batch=1), callback=record)
        assert seen[6:] == [1, 1]
    finally:
        torch.set_num_threads(before)


def test_a_compiled_network_draws_the_digits_of_the_eager_one_in_the_same_batches() -> None:
    """`compile=True`: the same digits as eager (fp32, to float tolerance), a last, smaller batch padded
    to the compiled shape and cut back, and one compiled network reused while the weights stay."""
    model, schedule = UNet(preset("tiny")), NoiseSchedule(DiffusionConfig(num_timesteps=20))
    settings = plain(steps=2, max_batch=4, guidance_interval=(0.5, 1.0), guidance=1.5)
    labels = torch.arange(6) % 10
    eager = generate(model, schedule, 6, settings, labels=labels, generator=torch.Generator().manual_seed(3))
    fast = generate(model, schedule, 6, dataclasses.replace(settings, compile=True), labels=labels,
                    generator=torch.Generator().manual_seed(3))
    assert fast.shape == eager.shape == (6, 1, 28, 28)
    torch.testing.assert_close(fast, eager, atol=1e-4, rtol=1e-4)
    assert devices.compiled_network(model) is devices.compiled_network(model)
    with torch.no_grad():
        model.out[-1].bias.add_(0.5)  # the weights change: compiled again, with the new weights
    changed = devices.compiled_network(model)
    x, t = torch.randn(4, 1, 28, 28), torch.full((4,), 3)
    with torch.no_grad():
        torch.testing.assert_close(changed(x, t, labels[:4]), model(x, t, labels[:4]), atol=1e-4, rtol=1e-4)


def test_a_network_that_cannot_be_compiled_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo.exc import BackendCompilerFailed

    def no_compiler(*args, **kwargs):
        raise BackendCompilerFailed("inductor", RuntimeError("Compiler: g++ is not found"), None)

    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: no_compiler)
    model = UNet(preset("tiny"))
    with pytest.raises(RuntimeError, match=r"^--compile: .*g\+\+ is not found.*draw without --compile"):
        generate(model, NoiseSchedule(DiffusionConfig(num_timesteps=20)), 2, plain(steps=1, compile=True))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_gives_identical_samples(tiny_checkpoint: Path, name: str) -> None:
    checkpoint = load_checkpoint(tiny_checkpoint)
    model, schedule = checkpoint.build_model(), NoiseSchedule(checkpoint.diffusion_config)

    def draw(seed: int) -> torch.Tensor:
        return generate(model, schedule, 6, plain(guidance=2.0, sampler=name, steps=5), labels=torch.arange(6),
                        generator=torch.Generator().manual_seed(seed))

    first, second, other = draw(7), draw(7), draw(8)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


class FirstInputs(torch.nn.Module):
    """A fake network that keeps the x of its first call on each batch (the starting noise) and
    predicts zero noise."""

    def __init__(self) -> None:
        super().__init__()
        self.config, self.starts = preset("tiny"), []

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if int(t[0]) == 19:
            self.starts.append(x.clone())
        return torch.zeros_like(x)


def test_one_seed_starts_every_sampler_from_the_same_noise_in_every_batch() -> None:
    """The starting noise of all digits is drawn before any step, so the stochastic samplers' fresh
    noise cannot shift the next batch's start: a seed pairs digit k across samplers."""
    schedule, starts = NoiseSchedule(DiffusionConfig(num_timesteps=20)), {}
    for name in sorted(SAMPLERS):
        net = FirstInputs()
        generate(net, schedule, 5, plain(sampler=name, steps=4, max_batch=2), labels=torch.arange(5),
                 generator=torch.Generator().manual_seed(3))
        starts[name] = torch.cat(net.starts)
    expected = torch.randn((5, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    for name, start in starts.items():
        assert torch.equal(start, expected), name


class RecordingNet(torch.nn.Module):
    """A fake network whose output is label-dependent and counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.config = preset("tiny")
        self.calls = 0

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        self.calls += 1
        assert labels is not None
        return x * 0 + labels.float().view(-1, 1, 1, 1)


def test_guidance_combines_both_branches_in_one_pass() -> None:
    net, schedule = RecordingNet(), NoiseSchedule(DiffusionConfig(num_timesteps=10))
    x, t = torch.zeros(2, 1, 4, 4), torch.tensor([5, 5])
    labels, null = torch.tensor([3, 7]), 10.0

    def output(w: float) -> torch.Tensor:
        _, eps = Denoiser(net, schedule, labels, guidance=w, clip=False)(x, t)
        return eps  # epsilon prediction: eps is the network output itself

    assert torch.allclose(output(0.0), torch.full_like(x, null))  # W = 0 is the unconditional prediction
    assert torch.allclose(output(1.0), labels.float().view(-1, 1, 1, 1).expand_as(x))
    net.calls = 0
    guided = output(2.5)
    assert net.calls == 1
    expected = null + 2.5 * (labels.float() - null)
    assert torch.allclose(guided, expected.view(-1, 1, 1, 1).expand_as(x))


class ScaledNet(RecordingNet):
    """RecordingNet's output times `scale`: a "weaker model" whose error is known."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.scale * super().forward(x, t, labels)


def test_autoguidance_extrapolates_from_the_guide_network_with_the_same_label() -> None:
    net, guide, schedule = RecordingNet(), ScaledNet(0.5), NoiseSchedule(DiffusionConfig(num_timesteps=10))
    x, t, labels = torch.zeros(2, 1, 4, 4), torch.tensor([5, 5]), torch.tensor([3, 7])
    _, eps = Denoiser(net, schedule, labels, guidance=3.0, clip=False, guide=guide)(x, t)
    cond = labels.float().view(-1, 1, 1, 1)
    assert torch.allclose(eps, (0.5 * cond + 3.0 * (cond - 0.5 * cond)).expand_as(x))  # no null label involved
    assert (net.calls, guide.calls) == (1, 1)
    # Outside the guidance interval only the model runs; a guide identical to the model changes nothing.
    guide.calls = 0
    _, eps = Denoiser(net, schedule, labels, guidance=3.0, clip=False, guide=guide, guidance_interval=(0.7, 0.9))(x, t)
    assert guide.calls == 0 and torch.allclose(eps, cond.expand_as(x))
    _, eps = Denoiser(net, schedule, labels, guidance=3.0, clip=False, guide=ScaledNet(1.0))(x, t)
    assert torch.allclose(eps, cond.expand_as(x))


def test_autoguidance_below_a_share_and_class_guidance_above_it() -> None:
    """With `guide_below`, a guided step under that share of T is autoguided at `guide_weight`, one above it
    gets classifier-free guidance at `guidance`: two passes either way."""
    schedule, labels = NoiseSchedule(DiffusionConfig(num_timesteps=10)), torch.tensor([3, 7])
    x, t, cond = torch.zeros(2, 1, 4, 4), torch.tensor([5, 5]), labels.float().view(-1, 1, 1, 1)  # t/T = 5/9
    null = 10.0  # RecordingNet answers its label, and the null label is 10
    for below, expected in ((0.5, null + 3.0 * (cond - null)), (0.6, 0.5 * cond + 2.0 * (cond - 0.5 * cond))):
        net, guide = RecordingNet(), ScaledNet(0.5)
        _, eps = Denoiser(net, schedule, labels, guidance=3.0, clip=False, guide=guide, guide_weight=2.0,
                          guide_below=below)(x, t)
        assert torch.allclose(eps, expected.expand_as(x)), below
        assert net.calls == 1 and guide.calls == (below > 5 / 9)  # CFG: both branches in one batched call
    with pytest.raises(ValueError, match="needs a guide network"):
        Denoiser(RecordingNet(), schedule, labels, guidance=3.0, guide_weight=2.0)
    with pytest.raises(ValueError, match="guide_below"):
        Denoiser(RecordingNet(), schedule, labels, guidance=3.0, guide=ScaledNet(0.5), guide_below=1.5)


def test_autoguidance_passes_are_counted_with_the_guide_network() -> None:
    """The guide network's passes are the cost too: the count is the sum of both networks' batches,
    and a guide given with nothing to guide is refused instead of dropped."""
    schedule, interval = NoiseSchedule(DiffusionConfig(num_timesteps=50)), (0.3, 0.7)
    net, guide = CountingNet(num_classes=10), CountingNet(num_classes=10)
    settings = plain(guidance=2.0, steps=8, guidance_interval=interval)
    generate(net, schedule, 4, settings, labels=torch.arange(4), guide=guide)
    counted = count_passes(schedule, settings, Guidance(True, 2.0, interval, guide=True))
    assert sum(guide.batch_sizes) > 0
    assert sum(net.batch_sizes) + sum(guide.batch_sizes) == 4 * counted
    with pytest.raises(ValueError, match="guide network guides a conditional draw"):
        generate(net, schedule, 4, plain(guidance=0.0), labels=torch.arange(4), guide=guide)


def test_a_guide_for_other_images_is_refused() -> None:
    model, schedule = UNet(preset("tiny")), NoiseSchedule(DiffusionConfig(num_timesteps=10))
    for other in (preset("tiny", num_classes=5), preset("tiny", image_size=32)):
        with pytest.raises(ValueError, match="guide network"):
            generate(model, schedule, 2, plain(guidance=2.0), labels=torch.tensor([1, 2]), guide=UNet(other))


def test_unconditional_model_refuses_labels() -> None:
    model = UNet(preset("tiny", num_classes=0))
    with pytest.raises(ValueError, match="unconditional"):
        Denoiser(model, NoiseSchedule(DiffusionConfig(num_timesteps=10)), torch.tensor([1]))


class VelocityNet(torch.nn.Module):
    """A fake v-prediction network that knows the true x0 and eps of its inputs."""

    def __init__(self, schedule: NoiseSchedule, x0: torch.Tensor, eps: torch.Tensor) -> None:
        super().__init__()
        self.config = preset("tiny", num_classes=0)
        self.schedule, self.x0, self.eps = schedule, x0, eps

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.schedule.v_target(self.x0, t, self.eps)


def test_denoiser_turns_v_predictions_into_x0_and_eps() -> None:
    """v = alpha eps - sigma x0 (Salimans & Ho 2022); Denoiser must hand samplers x0 = alpha x_t - sigma v
    and eps = sigma x_t + alpha v, and with clipping re-derive eps from the clipped x0."""
    schedule = NoiseSchedule(DiffusionConfig(num_timesteps=1000, prediction_type="v"))
    generator = torch.Generator().manual_seed(0)
    x0 = 1.5 * torch.randn(4, 1, 3, 3, generator=generator)  # beyond [-1, 1] in places
    eps = torch.randn(4, 1, 3, 3, generator=generator)
    t = torch.tensor([0, 10, 500, 990])
    x_t = schedule.q_sample(x0, t, eps)
    net = VelocityNet(schedule, x0, eps)
    x0_hat, eps_hat = Denoiser(net, schedule, clip=False)(x_t, t)
    torch.testing.assert_close(x0_hat, x0, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(eps_hat, eps, atol=1e-4, rtol=1e-4)
    x0_clipped, eps_clipped = Denoiser(net, schedule, clip=True)(x_t, t)
    torch.testing.assert_close(x0_clipped, x0.clamp(-1, 1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(schedule.q_sample(x0_clipped, t, eps_clipped), x_t, atol=1e-4, rtol=1e-4)


class CountingNet(torch.nn.Module):
    """A fake network that outputs zeros and records how many images each call evaluates."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.config = preset("tiny", num_classes=num_classes)
        self.batch_sizes: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        self.batch_sizes.append(len(x))
        return torch.zeros_like(x)


@pytest.mark.parametrize(("sampler", "guidance", "labelled"), [("dpm++2m", 1.5, True), ("ddim", 1.0, True),
                                                              ("ddpm", 0.0, True), ("dpm++2m", 3.0, False)])
def test_network_passes_are_counted_as_the_network_sees_them(sampler: str, guidance: float, labelled: bool) -> None:
    """Every visited timestep is one evaluation per digit, the final denoise included; a guided step
    is two (the batch doubles). The reported count must equal what the network computed."""
    net = CountingNet(num_classes=10 if labelled else 0)
    schedule, num, steps = NoiseSchedule(DiffusionConfig(num_timesteps=50)), 6, 7
    labels = torch.arange(num) % 10 if labelled else None
    settings = plain(guidance=guidance, sampler=sampler, steps=steps, max_batch=4)
    generate(net, schedule, num, settings, labels=labels)
    counted = count_passes(schedule, settings, Guidance(labelled, guidance))
    assert sum(net.batch_sizes) == num * counted
    assert counted == steps * (2 if labelled and guidance not in (0.0, 1.0) else 1)
    assert default_steps("ddpm", 50) == 50 and default_steps("dpm++2m", 50) == FEW_STEPS


def test_labels_outside_the_models_classes_are_refused() -> None:
    with pytest.raises(ValueError, match="class 10 is not one of this model's 10 classes"):
        Denoiser(UNet(preset("tiny")), NoiseSchedule(DiffusionConfig(num_timesteps=10)), torch.tensor([3, 10]))


def test_a_guidance_interval_guides_only_there_and_counts_its_passes() -> None:
    """Guidance limited to t/T in [low, high] runs both branches only there (Kynkaanniemi et al. 2024):
    the network sees the doubled batch on exactly the counted steps, and the conditional one elsewhere."""
    schedule, steps, num = NoiseSchedule(DiffusionConfig(num_timesteps=50)), 8, 4
    interval = (0.2, 0.7)
    timesteps = make_timesteps(50, steps, DEFAULT_SPACING["unipc"], schedule.log_snr)
    guided = sum(guided_at(t, 50, interval) for t in timesteps.tolist())
    assert 0 < guided < steps
    net = CountingNet(num_classes=10)
    settings = plain(guidance=2.0, steps=steps, guidance_interval=interval)
    generate(net, schedule, num, settings, labels=torch.arange(num))
    assert net.batch_sizes == [2 * num if guided_at(t, 50, interval) else num for t in timesteps.tolist()]
    assert sum(net.batch_sizes) == num * count_passes(schedule, settings, Guidance(True, 2.0, interval))
    assert count_passes(schedule, settings, Guidance(True, 2.0, interval)) == steps + guided


def test_an_interval_covering_every_noise_level_is_plain_guidance() -> None:
    torch.manual_seed(0)
    model = UNet(preset("tiny"))
    with torch.no_grad():  # undo the zero init, so the label (and so guidance) changes the output
        for name, parameter in model.named_parameters():
            if name.endswith("weight") and parameter.ndim == 4:
                parameter.normal_(0, 0.05)
    schedule = NoiseSchedule(DiffusionConfig(num_timesteps=50))

    def draw(interval):
        return generate(model, schedule, 4, plain(guidance=2.0, steps=5, guidance_interval=interval),
                        labels=torch.arange(4), generator=torch.Generator().manual_seed(1), clip=False)

    assert torch.equal(draw((0.0, 1.0)), draw("all"))
    assert not torch.equal(draw((0.05, 0.95)), draw("all"))  # the first (t = T-1) and last (t = 0) steps unguided
    with pytest.raises(ValueError, match="guidance_interval"):
        draw((0.7, 0.2))
    with pytest.raises(ValueError, match="guidance_interval"):
        draw(None)  # "no interval" has one spelling, "all"


class AutocastSpy(torch.nn.Module):
    """A fake epsilon network that records whether bfloat16 autocast was on and answers in bfloat16."""

    def __init__(self) -> None:
        super().__init__()
        self.autocast: list[bool] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        self.autocast.append(torch.is_autocast_enabled(x.device.type))
        return (0.1 * x).to(torch.bfloat16)


def test_bf16_precision_runs_the_network_under_autocast_and_returns_fp32() -> None:
    net, schedule = AutocastSpy(), NoiseSchedule(DiffusionConfig(num_timesteps=10))
    x, t = torch.randn(2, 1, 4, 4), torch.tensor([5, 5])
    for precision, expected in (("fp32", False), ("bf16", True)):
        x0, eps = Denoiser(net, schedule, precision=precision)(x, t)
        assert net.autocast[-1] is expected
        assert x0.dtype == eps.dtype == torch.float32
    with pytest.raises(ValueError, match="precision"):
        Denoiser(net, schedule, precision="fp16")


@pytest.mark.parametrize("fp32_from, expected", [(None, [True] * 4), (1.0, [False, True, True, True]),
                                                (0.4, [False, False, True, True]), (0.0, [False] * 4)])
def test_steps_from_a_share_of_t_run_in_fp32_whatever_the_precision(fp32_from: float | None,
                                                                      expected: list[bool]) -> None:
    """`fp32_from`: the steps at t / (T - 1) >= SHARE leave autocast off (1: the first step alone)."""
    net, schedule = AutocastSpy(), NoiseSchedule(DiffusionConfig(num_timesteps=1000))
    net.config = preset("tiny", num_classes=0)
    settings = plain(sampler="ddim", steps=4, precision="bf16", fp32_from=fp32_from, last_timestep=25)
    seen: list[int] = []
    generate(net, schedule, 2, settings, callback=lambda step: seen.append(step["t"]))
    assert seen[0] == 999 and 0.4 <= seen[1] / 999 < 1 and seen[2] / 999 < 0.4  # the shares the cases rely on
    assert net.autocast == expected


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch: pytest.MonkeyPatch) -> None:
    for native in (True, False):
        monkeypatch.setattr(devices, "bf16_is_native", lambda device, native=native: native)
        assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
        assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("fp8", "cpu")


@pytest.mark.parametrize("spacing", ["quadratic", "linear", "logsnr"])
def test_a_walk_can_end_above_the_cleanest_timestep(spacing: str) -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    steps = make_timesteps(1000, 8, spacing, schedule.log_snr, last=25)
    assert steps[0] == 999 and steps[-1] == 25 and len(set(steps.tolist())) == 8
    assert (steps[:-1] > steps[1:]).all()
    assert make_timesteps(1000, 8, spacing, schedule.log_snr, last=0)[-1] == 0
    with pytest.raises(ValueError, match="last timestep"):
        make_timesteps(1000, 8, spacing, schedule.log_snr, last=999)


def ode_endpoint_error(name: str, steps: int, mean: float = 0.3, std: float = 0.5) -> float:
    """Largest error of a sampler's clean image against the exact probability-flow ODE solution for
    N(mean, std^2) data, which is linear: x_0 = mean + std (x_T - alpha_T mean) / sqrt(alpha_T^2 std^2 + sigma_T^2).
    The data prediction is computed in float64, so the error is the solver's alone."""
    def denoise(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = SCHEDULE.alphas_cumprod64[t].view(-1, 1, 1, 1)
        return mean + abar.sqrt() * std ** 2 / (abar * std ** 2 + 1 - abar) * (x - abar.sqrt() * mean), x

    x = torch.linspace(-3, 3, 61, dtype=torch.float64).view(-1, 1, 1, 1)
    timesteps = make_timesteps(1000, steps, "logsnr", SCHEDULE.log_snr)
    abar = float(SCHEDULE.alphas_cumprod64[timesteps[0]])
    exact = mean + std * (x - abar ** 0.5 * mean) / (abar * std ** 2 + 1 - abar) ** 0.5
    return float((SAMPLERS[name](denoise, x.clone(), timesteps, SCHEDULE) - exact).abs().max())


def test_unipc_corrects_dpm_solver_pp_to_a_higher_order() -> None:
    """UniPC's corrector raises the order of DPM-Solver++(2M), its predictor, by one (Zhao et al. 2023,
    Theorem 3.3): with enough steps its error is the smaller and falls faster as steps double."""
    errors = {name: [ode_endpoint_error(name, steps) for steps in (24, 48)] for name in ("dpm++2m", "unipc")}
    assert errors["unipc"][1] < errors["dpm++2m"][1] / 2, errors
    assert errors["unipc"][0] / errors["unipc"][1] > 2 * errors["dpm++2m"][0] / errors["dpm++2m"][1], errors


def test_the_logsnr_spacing_jumps_from_pure_noise_to_its_floor() -> None:
    """Below the floor a digit has not begun: the first step goes from T-1 straight there, and the
    other steps are even in log-SNR from the floor to the last level. A floor below log-SNR(T-1)
    spreads every step evenly from T-1."""
    table = SCHEDULE.log_snr.double()
    steps = make_timesteps(1000, 8, "logsnr", SCHEDULE.log_snr, last=25, log_snr_floor=-5.0)
    assert steps[0] == 999 and steps[-1] == 25
    assert abs(float(table[steps[1]]) - -5.0) < 0.05
    gaps = table[steps[1:]].diff()
    assert gaps.max() / gaps.min() < 1.1, steps.tolist()
    full = make_timesteps(1000, 8, "logsnr", SCHEDULE.log_snr, log_snr_floor=-50.0)
    gaps = table[full].diff()
    assert gaps.max() / gaps.min() < 1.1, full.tolist()
    with pytest.raises(ValueError, match="floor"):
        make_timesteps(1000, 8, "logsnr", SCHEDULE.log_snr, log_snr_floor=float("nan"))
    with pytest.raises(ValueError, match="must lie below the last level"):
        make_timesteps(1000, 8, "logsnr", SCHEDULE.log_snr, last=25, log_snr_floor=6.0)


def test_passes_are_counted_on_the_walk_that_is_run() -> None:
    """The guided steps are those of the walk generate runs, down to its last timestep and from its
    floor, so the predicted passes are the network's batches, whatever the end point."""
    schedule, steps, num, interval = NoiseSchedule(DiffusionConfig()), 8, 2, (0.3, 0.7)
    for last, floor in ((0, -10.2), (25, -5.0), (100, -3.0)):
        net = CountingNet(num_classes=10)
        settings = plain(guidance=2.0, steps=steps, guidance_interval=interval, last_timestep=last, log_snr_floor=floor)
        generate(net, schedule, num, settings, labels=torch.arange(num))
        assert sum(net.batch_sizes) == num * count_passes(schedule, settings, Guidance(True, 2.0, interval))


def test_the_last_timestep_scales_with_the_schedule() -> None:
    from mnist_diffusion.sampling import last_timestep_for

    assert last_timestep_for(12, 1000) == 12 and last_timestep_for(12, 300) == 4 and last_timestep_for(12, 50) == 1
    assert last_timestep_for(0, 50) == 0 and last_timestep_for(500, 3) == 1  # a walk keeps two levels


def test_the_walk_clamps_a_clean_estimate_at_the_models_taught_black() -> None:
    """x0_hat is kept between the model's black (below -1 when taught, `ModelConfig.black_margin`) and 1."""
    class FarBelow(torch.nn.Module):
        def __init__(self, margin: float) -> None:
            super().__init__()
            self.config = preset("tiny", black_margin=margin)

        def forward(self, x, t, labels=None):  # an x0 far below any black: eps = (x - sqrt(a) x0) / sqrt(1-a)
            alpha = schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
            return (x - alpha.sqrt() * -3.0) / (1 - alpha).sqrt()

    schedule = NoiseSchedule(DiffusionConfig(num_timesteps=10))
    x, t = torch.zeros(2, 1, 4, 4), torch.tensor([5, 5])
    for margin in (0.0, 0.2):
        x0, _ = Denoiser(FarBelow(margin), schedule, torch.tensor([1, 2]))(x, t)
        assert torch.allclose(x0, torch.full_like(x, -1.0 - margin))
