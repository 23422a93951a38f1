"""The Python face of the package: a model and the product's defaults, in a few calls.

    from mnist_diffusion import Pipeline, save_grid

    pipe = Pipeline.load()                                  # the shipped model (or a checkpoint path)
    digits = pipe.sample(digits=range(10), per_digit=8)     # uint8 (80, 28, 28), one row per digit
    save_grid(digits, "digits.png", nrow=8)

Every method takes the defaults of `config.SampleConfig` (the ones the command line and the page
use) unless told otherwise, returns uint8 numpy arrays of 28x28 digits, and is what the command
line itself calls: the same seed gives the same digits here and there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .completion import DEFAULT_METHOD, complete, guess_digit, model_inputs, region_mask
from .config import SampleConfig
from .data import to_uint8
from .distributed import pick_device
from .interpolation import interpolate_digits, interpolate_seeds
from .sampling import Callback, count_passes, default_steps, generate, last_timestep_for, resolve_precision
from .schedule import NoiseSchedule


def _stochastic_kwargs(eta: float | None, noise_below: float | None) -> dict[str, float] | None:
    """The sampler keyword arguments a stochastic sampler takes, those given (None: none given)."""
    given = {name: value for name, value in (("eta", eta), ("noise_below", noise_below)) if value is not None}
    return given or None


MAX_DIGITS = 100_000  # digits one call may draw (100k x 784 bytes = 78 MB of pixels)
IMAGE_SIZES = (28, 32)  # native, or zero-padded to 32 (a power of two, as many UNet recipes use)


@dataclass
class Pipeline:
    """A loaded model, its noise schedule and the sampling settings its methods use by default."""

    checkpoint: Checkpoint
    model: nn.Module
    schedule: NoiseSchedule
    device: torch.device
    defaults: SampleConfig = dataclasses.field(default_factory=SampleConfig)

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, *, device: str | None = "auto", use_ema: bool = True,
             defaults: SampleConfig | None = None) -> Pipeline:
        """The shipped model (`checkpoint=None`), or a checkpoint or exported model written by this
        package; on CUDA when present unless `device` says otherwise; EMA weights unless `use_ema=False`."""
        loaded = load_checkpoint(checkpoint)
        config = loaded.model_config
        if config.in_channels != 1 or config.image_size not in IMAGE_SIZES:
            raise ValueError(f"{checkpoint or 'the shipped model'} is for {config.in_channels}-channel "
                             f"{config.image_size}px images; MNIST models here are 1-channel at "
                             f"{' or '.join(map(str, IMAGE_SIZES))}px")
        chosen = pick_device(device)
        return cls(loaded, loaded.build_model(use_ema=use_ema).to(chosen), NoiseSchedule(loaded.diffusion_config),
                   chosen, defaults or SampleConfig())

    @property
    def num_classes(self) -> int:
        return self.checkpoint.model_config.num_classes

    def settings(self, **overrides: Any) -> SampleConfig:
        """The defaults with the given fields replaced (None keeps a default)."""
        return dataclasses.replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})

    def steps_for(self, settings: SampleConfig) -> int:
        """The steps `settings` asks for: DDPM takes every timestep unless told otherwise."""
        last = self.last_timestep(settings)
        room = self.schedule.num_timesteps - last  # timesteps from T-1 down to the last
        steps = settings.steps or min(default_steps(settings.sampler, self.schedule.num_timesteps), room)
        if steps > room:
            raise ValueError(f"steps {steps} exceeds the model's {room} timesteps down to {last}")
        return steps

    def last_timestep(self, settings: SampleConfig) -> int:
        """Where `settings` end the walk on this model's schedule."""
        return last_timestep_for(settings.last_timestep, self.schedule.num_timesteps)

    def passes(self, settings: SampleConfig, conditional: bool) -> int:
        """Network passes per digit that `settings` cost on this model (`sampling.count_passes`)."""
        return count_passes(self.schedule, settings.sampler, self.steps_for(settings), conditional, settings.guidance,
                            settings.guidance_interval, self.checkpoint.model_config.guidance_input,
                            last=self.last_timestep(settings), log_snr_floor=settings.log_snr_floor)

    def generate(self, num: int, labels: torch.Tensor | None, settings: SampleConfig, generator: torch.Generator, *,
                 eta: float | None = None, callback: Callback = None, guide: nn.Module | None = None,
                 guide_weight: float | None = None, guide_below: float | None = None,
                 noise_below: float | None = None) -> torch.Tensor:
        """`sampling.generate` with every field of `settings` applied: `(num, 1, S, S)` in [-1, 1]. The one
        place `sample` and the scoring draw go through, so a new setting reaches both. `guide`: a weaker
        network to guide with instead of the unconditional branch (autoguidance, with `guide_weight` and
        `guide_below`: see `sampling.Denoiser`). `eta` and `noise_below` go to the stochastic samplers
        (`noise_below`: `dpm++2m-sde` only, see `solvers.sample_dpm_solver_pp_sde`)."""
        return generate(self.model, self.schedule, num, labels=labels, guidance=settings.guidance,
                        sampler=settings.sampler, steps=self.steps_for(settings), generator=generator,
                        batch_size=settings.batch_size, device=self.device,
                        guidance_interval=settings.guidance_interval, callback=callback,
                        sampler_kwargs=_stochastic_kwargs(eta, noise_below),
                        precision=resolve_precision(settings.precision, self.device),
                        last_timestep=self.last_timestep(settings), guide=guide,
                        log_snr_floor=settings.log_snr_floor, guide_weight=guide_weight, guide_below=guide_below)

    def labels(self, num: int | None = None, *, digit: int | None = None, digits: Iterable[int] | None = None,
               per_digit: int = 10, guidance: float | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, int]:
        """The labels to draw and how many digits: `per_digit` of each of `digits` in order, `num` of
        `digit`, or (neither asked) `num` digits (default 256) in an even mix of the classes in random
        order, which is unconditional for an unconditional model or guidance 0."""
        asked = list(digits) if digits is not None else ([digit] if digit is not None else [])
        if asked and self.num_classes == 0:
            raise ValueError("this model is unconditional: it cannot draw a chosen digit")
        if any(not 0 <= d < self.num_classes for d in asked):
            raise ValueError(f"digit {max(asked)} is not one of this model's {self.num_classes} classes "
                             f"(0-{self.num_classes - 1})")
        if digits is not None:
            if len(asked) * per_digit > MAX_DIGITS:
                raise ValueError(f"{len(asked)} digits x {per_digit} per digit is more than the {MAX_DIGITS:,} "
                                 f"digits one call may draw")
            return torch.tensor(asked).repeat_interleave(per_digit), len(asked) * per_digit
        num = num or 256
        if not 1 <= num <= MAX_DIGITS:
            raise ValueError(f"num must be from 1 to {MAX_DIGITS:,}, got {num}")
        if digit is not None:
            return torch.full((num,), digit), num
        if self.num_classes and (guidance if guidance is not None else self.defaults.guidance) > 0:
            labels = torch.arange(num) % self.num_classes
            return labels[torch.randperm(num, generator=generator)], num
        return None, num

    def sample(self, num: int | None = None, *, digit: int | None = None, digits: Iterable[int] | None = None,
               per_digit: int = 10, seed: int = 0, eta: float | None = None, noise_below: float | None = None,
               callback: Callback = None, **settings: Any) -> np.ndarray:
        """Draw digits, uint8 `(N, 28, 28)`: see `labels` for which; `settings` overrides fields of
        `SampleConfig` (sampler, steps, guidance, guidance_interval, precision, batch_size); `eta` and
        `noise_below` are the stochastic samplers' (see `generate`)."""
        return self.sample_with_labels(num, digit=digit, digits=digits, per_digit=per_digit, seed=seed, eta=eta,
                                       noise_below=noise_below, callback=callback, **settings)[0]

    def sample_with_labels(self, num: int | None = None, *, digit: int | None = None,
                           digits: Iterable[int] | None = None, per_digit: int = 10, seed: int = 0,
                           eta: float | None = None, noise_below: float | None = None, callback: Callback = None,
                           **settings: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """`sample`, and the digits asked for (int64 `(N,)`, None when drawn unconditionally)."""
        config = self.settings(**settings)
        # The same generator shuffles the labels and draws the noise: a seed names one set of digits.
        generator = torch.Generator().manual_seed(seed)
        labels, num = self.labels(num, digit=digit, digits=digits, per_digit=per_digit, guidance=config.guidance,
                                  generator=generator)
        images = self.generate(num, labels, config, generator, eta=eta, noise_below=noise_below, callback=callback)
        return to_uint8(images).numpy(), labels.numpy() if labels is not None else None

    def complete(self, images: np.ndarray | torch.Tensor, mask: str | np.ndarray | torch.Tensor = "lower", *,
                 digit: int | None = None, num_per_image: int = 8, method: str = DEFAULT_METHOD, seed: int = 0,
                 steps: int | None = None, sampler: str | None = None, guidance: float | None = None,
                 eta: float | None = None, noise_below: float | None = None, batch_size: int | None = None,
                 guess: bool = True, callback: Callback = None) -> np.ndarray:
        """Draw the erased part of uint8 digits `(N, 28, 28)` (or one `(28, 28)`): `mask` is a region
        name (`completion.MASK_REGIONS`) or a bool keep-mask `(28, 28)`, True = known. Returns
        `num_per_image` completions of each, input-major: uint8 `(N * num_per_image, 28, 28)`. With
        `digit`, each completes as that digit (guided). Without, a conditional model first guesses the
        digit the known strokes begin (`completion.guess_digit`) and completes as that one (unguided:
        the label alone steers); `guess=False` completes as whatever the strokes become."""
        return self.complete_with_digits(images, mask, digit=digit, num_per_image=num_per_image, method=method,
                                         seed=seed, steps=steps, sampler=sampler, guidance=guidance, eta=eta,
                                         noise_below=noise_below, batch_size=batch_size, guess=guess,
                                         callback=callback)[0]

    def complete_with_digits(self, images: np.ndarray | torch.Tensor, mask: str | np.ndarray | torch.Tensor = "lower",
                             *, digit: int | None = None, num_per_image: int = 8, method: str = DEFAULT_METHOD,
                             seed: int = 0, steps: int | None = None, sampler: str | None = None,
                             guidance: float | None = None, eta: float | None = None,
                             noise_below: float | None = None, batch_size: int | None = None, guess: bool = True,
                             callback: Callback = None) -> tuple[np.ndarray, np.ndarray | None]:
        """`complete`, and the digit each input was completed as, `(N,)` (None: as whatever it becomes)."""
        pixels = torch.as_tensor(np.asarray(images, dtype=np.uint8))
        pixels = pixels[None] if pixels.ndim == 2 else pixels
        keep = region_mask(mask) if isinstance(mask, str) else torch.as_tensor(np.asarray(mask, dtype=bool))
        if len(pixels) * num_per_image > MAX_DIGITS:
            raise ValueError(f"{len(pixels)} images x {num_per_image} completions is more than the {MAX_DIGITS:,} "
                             f"digits one call may draw")
        keep_all = keep.expand(len(pixels), 28, 28)
        model_images, model_mask = model_inputs(pixels, keep_all, self.checkpoint.model_config.image_size)
        config = self.settings(sampler=sampler, guidance=guidance, batch_size=batch_size)
        generator = torch.Generator().manual_seed(seed)
        if digit is not None:
            labels, weight = torch.full((len(pixels),), digit), config.guidance
        elif guess and self.num_classes:
            labels = guess_digit(self.model, self.schedule, model_images, model_mask, generator=generator,
                                 batch_size=config.batch_size, device=self.device)
            weight = 1.0
        else:
            labels, weight = None, 1.0
        completed = complete(self.model, self.schedule, model_images, model_mask, num_per_image=num_per_image,
                             labels=labels, guidance=weight, method=method, sampler=config.sampler, steps=steps,
                             generator=generator, batch_size=config.batch_size, device=self.device,
                             callback=callback, sampler_kwargs=_stochastic_kwargs(eta, noise_below))
        return to_uint8(completed).numpy(), labels.numpy() if labels is not None else None

    def interpolate(self, *, seeds: tuple[int, int] | None = None, digit: int | None = None,
                    digits: tuple[int, int] | None = None, frames: int = 8, seed: int = 0, sampler: str | None = None,
                    steps: int | None = None, guidance: float | None = None) -> np.ndarray:
        """`frames` digits, uint8 `(frames, 28, 28)`: a walk between two seeds' noise (of `digit`,
        when given), or between two `digits` drawn from one `seed`'s noise."""
        if (seeds is None) == (digits is None):
            raise ValueError("give seeds=(a, b) (with digit=d on a conditional model) or digits=(a, b)")
        if digits is not None and digit is not None:
            raise ValueError("digit applies to a walk between seeds; a walk between digits names both in digits")
        config = self.settings(sampler=sampler, guidance=guidance)
        common = {"guidance": config.guidance, "sampler": config.sampler, "steps": steps, "device": self.device}
        if seeds is not None:
            walk = interpolate_seeds(self.model, self.schedule, tuple(seeds), frames, digit=digit, **common)
        else:
            walk = interpolate_digits(self.model, self.schedule, tuple(digits), frames, seed=seed, **common)
        return to_uint8(walk).numpy()


def save_grid(images: np.ndarray | torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Write uint8 digits `(N, 28, 28)` as one PNG grid of `nrow` per row (square by default), atomically."""
    from .figures import save_grid as save_tensor_grid

    return save_tensor_grid(torch.as_tensor(np.asarray(images, dtype=np.uint8)), path, nrow=nrow, scale=scale)
