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

from typing import Any

import torch
from torch import nn

from .sampling import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SAMPLER,
    DEFAULT_SPACING,
    SAMPLERS,
    Callback,
    DenoiseFn,
    Denoiser,
    Prediction,
    ddpm_posterior,
    default_steps,
    make_timesteps,
    noise_levels,
    noise_like,
)
from .schedule import NoiseSchedule

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
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    levels = noise_levels(schedule, timesteps)
    for i, t in enumerate(timesteps.tolist()):
        abar_t, abar_s = levels[i], levels[i + 1]
        beta = 1.0 - abar_t / abar_s
        for repeat in range(resamples):
            x0, _ = denoise(x, torch.full((x.shape[0],), t, device=x.device, dtype=torch.long))
            mean, variance = ddpm_posterior(x0, x, abar_t, abar_s)
            unknown = mean + variance ** 0.5 * noise_like(x, generator) if variance > 0 else mean
            known_s = abar_s ** 0.5 * known + (1.0 - abar_s) ** 0.5 * noise_like(x, generator)
            x = torch.where(keep, known_s, unknown)
            if repeat < resamples - 1 and abar_s < 1.0:
                x = (abar_t / abar_s) ** 0.5 * x + beta ** 0.5 * noise_like(x, generator)
        if callback is not None:
            callback({"i": i, "t": t, "x": x, "x0": torch.where(keep, known, x0)})
    return torch.where(keep, known, x)


def complete(model: nn.Module, schedule: NoiseSchedule, images: torch.Tensor, keep: torch.Tensor, *,
             num_per_image: int = 1, labels: torch.Tensor | None = None, guidance: float = 1.0,
             method: str = DEFAULT_METHOD, sampler: str = DEFAULT_SAMPLER, steps: int | None = None,
             resamples: int = REPAINT_RESAMPLES, generator: torch.Generator | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str = "cpu",
             callback: Callback = None,
             sampler_kwargs: dict[str, Any] | None = None) -> torch.Tensor:
    """`num_per_image` completions of each image, input-major: `(N * K, 1, S, S)` in [-1, 1].

    images: `(N, 1, S, S)` in [-1, 1] at the model's size; keep: bool, same shape, True = known.
    labels: `(N,)` digits to complete as (with `guidance`), or None for "whatever it is".
    method "replace" runs `sampler` for `steps`; "repaint" runs RePaint for `steps` (default
    `REPAINT_STEPS`) with `resamples` repetitions per step.
    """
    _check_inputs(model, images, keep, num_per_image, method, sampler)
    known = images.repeat_interleave(num_per_image, 0)
    mask = keep.repeat_interleave(num_per_image, 0)
    all_labels = labels.repeat_interleave(num_per_image, 0) if labels is not None else None
    model = model.to(device).eval()
    stepper = "ddpm" if method == "repaint" else sampler  # RePaint walks the respaced DDPM chain
    default = min(REPAINT_STEPS, schedule.num_timesteps) if method == "repaint" else \
        default_steps(sampler, schedule.num_timesteps)
    timesteps = make_timesteps(schedule.num_timesteps, steps or default, DEFAULT_SPACING[stepper], schedule.log_snr)
    outputs = []
    for start in range(0, len(known), batch_size):
        part = slice(start, start + batch_size)
        batch_known, batch_mask = known[part].to(device), mask[part].to(device)
        denoise = Denoiser(model, schedule, all_labels[part].to(device) if all_labels is not None else None,
                           guidance)
        x = torch.randn(batch_known.shape, generator=generator).to(device)
        if method == "repaint":
            out = sample_repaint(denoise, x, timesteps, schedule, known=batch_known, keep=batch_mask,
                                 resamples=resamples, generator=generator, callback=callback)
        else:
            out = SAMPLERS[sampler](replace_known(denoise, schedule, batch_known, batch_mask), x, timesteps,
                                    schedule, generator=generator, callback=callback, **(sampler_kwargs or {}))
        outputs.append(torch.where(batch_mask, batch_known, out).cpu())
    return torch.cat(outputs)


def _check_inputs(model: nn.Module, images: torch.Tensor, keep: torch.Tensor, num_per_image: int, method: str,
                  sampler: str) -> None:
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
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")


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


def model_inputs(pixels: torch.Tensor, keep: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 digits `(N, 28, 28)` and their keep-masks `(N, 28, 28)` -> model-space images and masks
    `(N, 1, S, S)`. A model trained on padded 32x32 images gets the black border as known pixels."""
    from .data import to_model_space

    images = to_model_space(pixels, image_size)
    pad = image_size - pixels.shape[-1]
    mask = torch.nn.functional.pad(keep[:, None], (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=True)
    return images, mask


# Noise levels, as shares of T, at which `guess_digit` asks the network how well each digit explains
# the known pixels: mid-range levels, where the digit's identity is still being decided (t = 100,
# 250, 400 and 550 of 1000 read 80% of lower halves right on the first 300 test digits, against 75-78%
# for earlier or later levels; measured on other digits in benchmarks/results/completion_guess.md).
GUESS_LEVELS = (0.1, 0.25, 0.4, 0.55)


@torch.no_grad()
def guess_digit(model: nn.Module, schedule: NoiseSchedule, images: torch.Tensor, keep: torch.Tensor, *,
                levels: tuple[float, ...] = GUESS_LEVELS, generator: torch.Generator | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, device: torch.device | str = "cpu") -> torch.Tensor:
    """The digit each partial image most likely begins, `(N,)` int64: for every class, the network's
    error in predicting the noise on the known pixels, averaged over the timesteps at `levels` (shares
    of T) with the same noise
    for every class; the class with the smallest error wins (a diffusion classifier, Li et al. 2023,
    eq. 5, restricted to the pixels that are known). images, keep: `(N, 1, S, S)` as for `complete`.
    Costs len(levels) x classes network passes per image."""
    num_classes = model.config.num_classes  # type: ignore[attr-defined]
    if num_classes == 0:
        raise ValueError("an unconditional model has no digits to choose between")
    model = model.to(device).eval()
    guesses = []
    for start in range(0, len(images), batch_size):
        x0, known = images[start:start + batch_size].to(device), keep[start:start + batch_size].to(device).float()
        count = len(x0)
        errors = torch.zeros(count, num_classes, device=device)
        classes = torch.arange(num_classes, device=device).repeat(count)  # (B*K,)
        for t in (min(round(share * schedule.num_timesteps), schedule.num_timesteps - 1) for share in levels):
            noise = torch.randn(x0.shape, generator=generator).to(device)
            steps = torch.full((count,), t, device=device, dtype=torch.long)
            x_t = schedule.q_sample(x0, steps, noise).repeat_interleave(num_classes, 0)  # (B*K, 1, S, S)
            output = model(x_t, steps.repeat_interleave(num_classes), classes)
            _, eps = schedule.to_x0_eps(x_t, steps.repeat_interleave(num_classes), output)
            squared = (eps - noise.repeat_interleave(num_classes, 0)).pow(2) * known.repeat_interleave(num_classes, 0)
            errors += squared.flatten(1).sum(1).view(count, num_classes) / known.flatten(1).sum(1, keepdim=True)
        guesses.append(errors.argmin(1).cpu())
    return torch.cat(guesses)
