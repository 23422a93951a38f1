"""Completion (inpainting): draw the erased part of a digit, keeping the known pixels exactly.

Two methods, both driven by the same trained network (no retraining):
- "replace": at every step the known region of the predicted clean image x0_hat is replaced by the
  given pixels and eps re-derived from it, so any sampler (DDPM, DDIM, DPM-Solver++) completes.
  Cheap, but the network never sees the known pixels in x_t itself, so seams are common.
- "repaint": RePaint (Lugmayr et al. 2022, Algorithm 1) on the respaced DDPM chain: each step draws
  the unknown region from the model's posterior and the known region from q(x_s | x_0 = known),
  then jumps back to the noisier level and repeats `resamples` times, which lets the two regions
  agree before moving on.

Images are in model space: float `(N, 1, S, S)` in [-1, 1]; `keep` is a bool mask of the same shape,
True where the pixel is known. The output's known pixels equal the input's exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import SampleConfig
from .devices import resolve_precision
from .sampling import BRANCH_PASSES, Denoiser, Guidance, make_timesteps, timesteps_for
from .schedule import NoiseSchedule
from .solvers import SAMPLERS, Callback, DenoiseFn, Prediction, ddpm_posterior, noise_levels, noise_like

COMPLETION_METHODS: tuple[str, ...] = ("repaint", "replace")
# Chosen by benchmarks/completion.py (results in benchmarks/results/completion.md): without a label,
# RePaint's completions were read as the right digit more often than x0-replacement's.
DEFAULT_METHOD = "repaint"
# RePaint's cost: steps x resamples network evaluations per digit (x2 with guidance).
REPAINT_STEPS = 50
REPAINT_RESAMPLES = 3


def replace_known(denoise: DenoiseFn, schedule: NoiseSchedule, known: torch.Tensor,
                  keep: torch.Tensor) -> DenoiseFn:
    """A denoiser whose x0 prediction holds the known pixels; eps is re-derived to match (eq. 4 of
    Ho et al. 2020 solved for eps), so every sampler's update stays consistent."""

    def denoise_with_known(x: torch.Tensor, t: torch.Tensor) -> Prediction:
        x0, _ = denoise(x, t)
        x0 = torch.where(keep, known, x0)
        return x0, schedule.eps_from_x0(x, t, x0)

    return denoise_with_known


@torch.no_grad()
def sample_repaint(denoise: DenoiseFn, x: torch.Tensor, timesteps: torch.Tensor, schedule: NoiseSchedule, *,
                   known: torch.Tensor, keep: torch.Tensor, resamples: int = REPAINT_RESAMPLES,
                   generator: torch.Generator | None = None, callback: Callback = None) -> torch.Tensor:
    """RePaint, Lugmayr et al. (2022), Algorithm 1, on the timesteps given (respaced DDPM).

    Each step from t to the next level s (1.0 after the last: the clean image):
        unknown ~ q(x_s | x_t, x0_hat)  (the DDPM posterior, eqs. 6-7 of Ho et al. 2020),
        known   ~ q(x_s | x_0 = known) = N(sqrt(abar_s) known, (1 - abar_s) I),
        x_s     = keep * known + (1 - keep) * unknown;
    then, except on the last repetition, back to t: x_t ~ N(sqrt(abar_t / abar_s) x_s, (1 - abar_t / abar_s) I).
    The last level (to the clean image) runs once: it has no noisier level to jump back to.
    Network passes per image: resamples x (levels - 1) + 1, twice that on guided levels.
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    levels = noise_levels(schedule, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        abar_t, abar_s = levels[i], levels[i + 1]
        beta = 1.0 - abar_t / abar_s
        # The last level goes to the clean image (abar_s = 1): there is no noisier level to jump back
        # to, so a repeat would only denoise the finished image again.
        repeats = resamples if abar_s < 1.0 else 1
        for repeat in range(repeats):
            x0, _ = denoise(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
            mean, variance = ddpm_posterior(x0, x, abar_t, abar_s)
            unknown = mean + variance ** 0.5 * noise_like(x, generator) if variance > 0 else mean
            known_s = abar_s ** 0.5 * known + (1.0 - abar_s) ** 0.5 * noise_like(x, generator)
            x = torch.where(keep, known_s, unknown)
            if repeat < repeats - 1:  # back to t: x_t ~ q(x_t | x_s)
                x = (abar_t / abar_s) ** 0.5 * x + beta ** 0.5 * noise_like(x, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": torch.where(keep, known, x0)})
    return torch.where(keep, known, x)


def complete(model: nn.Module, schedule: NoiseSchedule, images: torch.Tensor, keep: torch.Tensor,
             settings: SampleConfig | None = None, *, num_per_image: int = 1, labels: torch.Tensor | None = None,
             method: str = DEFAULT_METHOD, resamples: int = REPAINT_RESAMPLES, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu", callback: Callback = None) -> torch.Tensor:
    """`num_per_image` completions of each image, input-major: `(N * K, 1, S, S)` in [-1, 1].

    images: `(N, 1, S, S)` in [-1, 1] at the model's size; keep: bool, same shape, True = known.
    labels: `(N,)` classes to complete as (guided by `settings.guidance` on `settings.guidance_interval`),
    or None for "whatever it is". `settings` (default `SampleConfig()`) gives the network's precision,
    the batch and, for method "replace", the sampler and its walk (`sampling.timesteps_for`); "repaint"
    runs RePaint for `settings.steps` (default `REPAINT_STEPS`) levels with `resamples` repetitions.
    """
    settings = settings or SampleConfig()
    _check_inputs(model, images, keep, num_per_image, method, settings)
    known = images.repeat_interleave(num_per_image, 0)
    mask = keep.repeat_interleave(num_per_image, 0)
    all_labels = labels.repeat_interleave(num_per_image, 0) if labels is not None else None
    model = model.to(device).eval()
    timesteps = completion_timesteps(schedule, settings, method)
    precision = resolve_precision(settings.precision, device)
    outputs = []
    for start in range(0, len(known), settings.max_batch):
        part = slice(start, start + settings.max_batch)
        batch_known, batch_mask = known[part].to(device), mask[part].to(device)
        denoise = Denoiser(model, schedule, all_labels[part].to(device) if all_labels is not None else None,
                           settings.guidance, guidance_interval=settings.guidance_interval, precision=precision,
                           fp32_from=settings.fp32_from)
        x = torch.randn(batch_known.shape, generator=generator).to(device)
        if method == "repaint":
            out = sample_repaint(denoise, x, timesteps, schedule, known=batch_known, keep=batch_mask,
                                 resamples=resamples, generator=generator, callback=callback)
        else:
            out = SAMPLERS[settings.sampler](replace_known(denoise, schedule, batch_known, batch_mask), x, timesteps,
                                             schedule, generator=generator, callback=callback,
                                             **settings.sampler_kwargs())
        outputs.append(torch.where(batch_mask, batch_known, out).cpu())
    return torch.cat(outputs)


@dataclass(frozen=True)
class CompletionCost:
    """What completing one image costs: the levels its walk visits (one callback each), network passes
    per completion, and the passes per image of guessing its class first (0: no guess)."""

    method: str
    levels: int
    passes: int
    guess_passes: int

    def describe(self) -> str:
        walk = "RePaint" if self.method == "repaint" else "x0 replacement"
        guess = f", after {self.guess_passes} passes per image to guess the digit" if self.guess_passes else ""
        return f"{walk}, {self.levels} levels = {self.passes} network passes per completion{guess}"


def completion_cost(schedule: NoiseSchedule, settings: SampleConfig, guidance: Guidance, method: str,
                    guess_classes: int = 0, resamples: int = REPAINT_RESAMPLES) -> CompletionCost:
    """The cost of `complete` with these settings, counted by `guidance.branches` at every level it
    visits (RePaint: `resamples` times, once at the last level); `guess_classes`: the classes
    `guess_digit` scores first (0: no guess)."""
    timesteps = completion_timesteps(schedule, settings, method)
    repeats = [resamples] * (len(timesteps) - 1) + [1] if method == "repaint" else [1] * len(timesteps)
    passes = sum(count * BRANCH_PASSES[guidance.branches(t, schedule.num_timesteps)]
                 for count, t in zip(repeats, timesteps.tolist(), strict=True))
    return CompletionCost(method, len(timesteps), passes, len(GUESS_LEVELS) * GUESS_DRAWS * guess_classes)


def completion_timesteps(schedule: NoiseSchedule, settings: SampleConfig, method: str) -> torch.Tensor:
    """The levels `complete` visits: RePaint's respaced DDPM chain to t = 0 (`settings.steps`, default
    `REPAINT_STEPS`), or the sampler's own walk for "replace" (`sampling.timesteps_for`)."""
    if method != "repaint":
        return timesteps_for(settings, schedule)
    steps = settings.steps or min(REPAINT_STEPS, schedule.num_timesteps)
    if steps > schedule.num_timesteps:
        raise ValueError(f"steps {steps} exceeds the model's {schedule.num_timesteps} timesteps")
    return make_timesteps(schedule.num_timesteps, steps, "quadratic")


def _check_inputs(model: nn.Module, images: torch.Tensor, keep: torch.Tensor, num_per_image: int, method: str,
                  settings: SampleConfig) -> None:
    config = model.config  # type: ignore[attr-defined]
    expected = (config.in_channels, config.image_size, config.image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"images must be shaped (N, {', '.join(map(str, expected))}) for this model, "
                         f"got {tuple(images.shape)}")
    if keep.shape != images.shape or keep.dtype != torch.bool:
        raise ValueError(f"the mask must be a bool tensor shaped like the images {tuple(images.shape)}, "
                         f"got {keep.dtype} {tuple(keep.shape)}")
    if bool(keep.flatten(1).all(1).any()):
        raise ValueError("the mask erases nothing in at least one image: there is nothing to complete")
    if not bool(keep.flatten(1).any(1).all()):
        raise ValueError("the mask erases everything in at least one image: that is sampling, not completion")
    if num_per_image < 1:
        raise ValueError(f"completions per image must be at least 1, got {num_per_image}")
    if method not in COMPLETION_METHODS:
        raise ValueError(f"unknown completion method {method!r}; choose from {', '.join(COMPLETION_METHODS)}")
    if method == "repaint" and settings.sampler_kwargs():
        raise ValueError("eta and noise_below apply to method replace: RePaint resamples with DDPM steps of its own")


def region_mask(name: str, size: int = 28) -> torch.Tensor:
    """The named erased region as a keep-mask `(size, size)`, True = known: `lower`, `upper`, `left`,
    `right` halves or the `center` 12x12 square (of a 28x28 digit, scaled for other sizes)."""
    keep = torch.ones(size, size, dtype=torch.bool)
    half = size // 2
    if name == "lower":
        keep[half:] = False
    elif name == "upper":
        keep[:half] = False
    elif name == "left":
        keep[:, :half] = False
    elif name == "right":
        keep[:, half:] = False
    elif name == "center":
        side = round(size * 12 / 28)
        start = (size - side) // 2
        keep[start:start + side, start:start + side] = False
    else:
        raise ValueError(f"unknown mask {name!r}; choose from {', '.join(MASK_REGIONS)} or give a PNG")
    return keep


MASK_REGIONS: tuple[str, ...] = ("lower", "upper", "left", "right", "center")


def model_inputs(pixels: torch.Tensor, keep: torch.Tensor, image_size: int,
                 black: float = -1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 digits `(N, 28, 28)` and their keep-masks `(N, 28, 28)` -> model-space images and masks
    `(N, 1, S, S)`, black at `black` (`ModelConfig.black`). A model trained on padded 32x32 images gets
    the black border as known pixels."""
    from .data import to_model_space

    images = to_model_space(pixels, image_size, black)
    pad = image_size - pixels.shape[-1]
    mask = torch.nn.functional.pad(keep[:, None], (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=True)
    return images, mask


# Noise levels, as shares of T (`schedule.timestep_share`), at which `guess_digit` asks the network how
# well each digit explains the known pixels: mid-range levels, where the digit's identity is still being
# decided (t = 100, 250, 400 and 550 of 1000 read 80% of lower halves right on the first 300 test digits,
# against 75-78% for earlier or later levels; measured on other digits in benchmarks/results/completion_guess.md).
GUESS_LEVELS = (0.1, 0.25, 0.4, 0.55)
# Noise draws per level: each class is scored on the same draws, and more draws make the guess
# depend less on the seed (benchmarks/results/completion_guess.md).
GUESS_DRAWS = 2


def guess_timesteps(schedule: NoiseSchedule, levels: tuple[float, ...] = GUESS_LEVELS) -> list[int]:
    """The timesteps at `levels` (shares of T): the t whose `timestep_share` is nearest each share."""
    return [round(share * (schedule.num_timesteps - 1)) for share in levels]


@torch.no_grad()
def guess_digit(model: nn.Module, schedule: NoiseSchedule, images: torch.Tensor, keep: torch.Tensor, *,
                levels: tuple[float, ...] = GUESS_LEVELS, draws: int = GUESS_DRAWS,
                generator: torch.Generator | None = None, max_batch: int = SampleConfig.max_batch,
                device: torch.device | str = "cpu", precision: str = "fp32") -> torch.Tensor:
    """The class each partial image most likely begins, `(N,)` int64: for every class, the network's
    error in predicting the noise on the known pixels, averaged over `draws` noise draws at each of the
    timesteps at `levels` (shares of T), every class scored on the same draws; the class with the
    smallest error wins (a diffusion classifier, Li et al. 2023, eq. 5, restricted to the pixels that
    are known). The erased pixels are set to the background (the model's black) before noising, so the
    guess never reads them. images, keep: `(N, 1, S, S)` as for `complete`. Costs len(levels) x draws x
    classes network passes per image."""
    num_classes, black = model.config.num_classes, model.config.black  # type: ignore[attr-defined]
    if num_classes == 0:
        raise ValueError("an unconditional model has no classes to choose between")
    model = model.to(device).eval()
    guesses = []
    for start in range(0, len(images), max_batch):
        known = keep[start:start + max_batch].to(device)
        x0 = torch.where(known, images[start:start + max_batch].to(device), black)
        count, weight = len(x0), known.float().repeat_interleave(num_classes, 0)
        errors = torch.zeros(count, num_classes, device=device)
        classes = torch.arange(num_classes, device=device).repeat(count)  # (B*K,)
        for t in guess_timesteps(schedule, levels):
            steps = torch.full((count * num_classes,), t, device=device, dtype=torch.long)
            for _ in range(draws):
                noise = torch.randn(x0.shape, generator=generator).to(device).repeat_interleave(num_classes, 0)
                x_t = schedule.q_sample(x0.repeat_interleave(num_classes, 0), steps, noise)  # (B*K, 1, S, S)
                with torch.autocast(x_t.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    output = model(x_t, steps, classes)
                _, eps = schedule.to_x0_eps(x_t, steps, output.float())
                squared = (eps - noise).pow(2) * weight
                errors += squared.flatten(1).sum(1).view(count, num_classes)
        guesses.append(errors.argmin(1).cpu())
    return torch.cat(guesses)
