"""Interpolation: walk between two seeds of one digit, or between two digits from one seed.

Both run a deterministic sampler (DDIM with eta = 0, DPM-Solver++ or UniPC), so a frame is a function of
its starting noise and label alone, and the end frames are exactly the plain samples they name: the
same `SampleConfig`, the same seed's noise, the same label (`generate` draws every digit alone, so a
frame's pixels do not depend on the frames beside it).
- Between seeds: the starting noise moves along the great circle between the two seeds' noise
  (spherical interpolation, Shoemake 1985; Gaussian noise lives near a sphere of radius sqrt(d),
  and a straight line between two points on it would pass through low-norm, unlikely noise).
- Between digits: the noise stays; the label embedding moves linearly from one digit's to the other's.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .config import SampleConfig
from .sampling import Callback, generate
from .schedule import NoiseSchedule

DETERMINISTIC_SAMPLERS: tuple[str, ...] = ("dpm++2m", "unipc", "ddim")
MAX_FRAMES = 64


def slerp(a: torch.Tensor, b: torch.Tensor, weight: float) -> torch.Tensor:
    """Spherical interpolation from `a` (weight 0) to `b` (weight 1), treating each as one vector; the
    ends are `a` and `b` exactly."""
    if weight in (0.0, 1.0):
        return (a if weight == 0.0 else b).clone()
    cos = torch.clamp((a * b).sum() / (a.norm() * b.norm()), -1.0, 1.0)
    angle = torch.arccos(cos)
    if angle.abs() < 1e-6:  # (nearly) the same direction: a straight line is the great circle
        return (1 - weight) * a + weight * b
    return (torch.sin((1 - weight) * angle) * a + torch.sin(weight * angle) * b) / torch.sin(angle)


def seed_noise(model: nn.Module, seed: int) -> torch.Tensor:
    """The starting noise `(1, C, S, S)` that `generate` draws for one digit with this seed."""
    config = model.config  # type: ignore[attr-defined]
    shape = (1, config.in_channels, config.image_size, config.image_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _check(frames: int, settings: SampleConfig) -> SampleConfig:
    """`settings` for a walk of `frames` frames, each drawn alone (a network pass of one digit), so
    that a frame is exactly what `sample` draws from the same noise and label."""
    if not 2 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be between 2 and {MAX_FRAMES}, got {frames}")
    if settings.sampler not in DETERMINISTIC_SAMPLERS or settings.sampler_kwargs():
        raise ValueError(f"interpolation needs a deterministic sampler ({', '.join(DETERMINISTIC_SAMPLERS)}, "
                         f"no eta or noise_below), not {settings.sampler!r}")
    return dataclasses.replace(settings, max_batch=1)


def interpolate_seeds(model: nn.Module, schedule: NoiseSchedule, seeds: tuple[int, int], frames: int,
                      settings: SampleConfig | None = None, *, digit: int | None = None,
                      device: torch.device | str = "cpu", callback: Callback = None) -> torch.Tensor:
    """`frames` images `(frames, C, S, S)` from seed `seeds[0]` to `seeds[1]`, all of `digit`
    (None: unconditional), drawn with `settings` (default `SampleConfig()`)."""
    settings = _check(frames, settings or SampleConfig())
    start, end = seed_noise(model, seeds[0]), seed_noise(model, seeds[1])
    noise = torch.cat([slerp(start, end, w) for w in torch.linspace(0, 1, frames).tolist()])
    labels = torch.full((frames,), digit) if digit is not None else None
    return generate(model, schedule, frames, settings, labels=labels, noise=noise, device=device, callback=callback)


def interpolate_digits(model: nn.Module, schedule: NoiseSchedule, digits: tuple[int, int], frames: int,
                       settings: SampleConfig | None = None, *, seed: int = 0, device: torch.device | str = "cpu",
                       callback: Callback = None) -> torch.Tensor:
    """`frames` images from `digits[0]` to `digits[1]`, one seed's noise, the label embedding mixed;
    drawn with `settings` (default `SampleConfig()`)."""
    settings = _check(frames, settings or SampleConfig())
    num_classes = model.config.num_classes  # type: ignore[attr-defined]
    if num_classes == 0:
        raise ValueError("this model is unconditional; it has no digits to interpolate between")
    for d in digits:
        if not 0 <= d < num_classes:
            raise ValueError(f"digit {d} is not one of this model's {num_classes} classes (0-{num_classes - 1})")
    one_hot = torch.eye(num_classes + 1)
    weights = torch.stack([(1 - w) * one_hot[digits[0]] + w * one_hot[digits[1]]
                           for w in torch.linspace(0, 1, frames).tolist()])  # (frames, K + 1)
    noise = seed_noise(model, seed).expand(frames, -1, -1, -1).contiguous()
    return generate(model, schedule, frames, settings, labels=weights, noise=noise, device=device, callback=callback)
