"""The Python face of the package: a model and the product's defaults, in a few calls.

    from mnist_diffusion import Pipeline, save_grid

    pipe = Pipeline.load()                                  # the shipped model (or a checkpoint path)
    digits = pipe.sample(digits=range(10), per_digit=8)     # uint8 (80, 28, 28), one row per digit
    save_grid(digits, "digits.png", nrow=8)

Every method draws with `pipe.defaults` (a `SampleConfig`: the settings the command line and the page
use), any of whose fields a call may override by name (`pipe.sample(8, steps=16, guidance_interval="all")`),
returns uint8 numpy arrays of 28x28 digits, and is what the command line itself calls: the same seed
gives the same digits here and there. Arguments are checked at the door: a wrong one is a
`TypeError` or `ValueError` that names it.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .completion import DEFAULT_METHOD, complete, guess_digit, model_inputs, region_mask
from .config import MAX_SEED, SampleConfig, model_defaults
from .data import to_uint8
from .devices import choose_threads, pick_device, resolve_precision
from .interpolation import MAX_FRAMES, interpolate_digits, interpolate_seeds
from .sampling import (
    Callback,
    Guidance,
    check_guide,
    count_passes,
    describe_passes,
    generate,
    last_timestep_for,
    timesteps_for,
)
from .schedule import NoiseSchedule

MAX_DIGITS = 100_000  # digits one call may draw (100k x 784 bytes = 78 MB of pixels)
IMAGE_SIZES = (28, 32)  # native, or zero-padded to 32 (a power of two, as many UNet recipes use)
MAX_CLASS = 2**31 - 1
DEFAULT_NUM = 256  # digits `sample` draws when neither a number nor classes are asked for


def whole(name: str, value: Any, low: int, high: int) -> int:
    """`value` as an int in [low, high]; `TypeError` or `ValueError` naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {type(value).__name__} {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be from {low:,} to {high:,}, got {int(value):,}")
    return int(value)


def _generator(seed: int | None, generator: torch.Generator | None) -> torch.Generator:
    """The generator a call draws from: `generator` as given, or a new one seeded with `seed` (0 by default)."""
    if generator is not None:
        if seed is not None:
            raise ValueError("give seed or generator, not both")
        if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
            raise TypeError("generator must be a CPU torch.Generator (noise is drawn on the CPU, so a seed gives the "
                            "same digits on every device)")
        return generator
    return torch.Generator().manual_seed(whole("seed", 0 if seed is None else seed, 0, MAX_SEED))


def _pixels(name: str, images: Any) -> torch.Tensor:
    """uint8 digits `(N, 28, 28)` from an array of whole numbers in [0, 255] (or one `(28, 28)`)."""
    array = np.asarray(images)
    if array.dtype == bool or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must be an array of pixel values, got {array.dtype}")
    array = array[None] if array.ndim == 2 else array
    if array.ndim != 3 or array.shape[1:] != (28, 28) or len(array) == 0:
        raise ValueError(f"{name} must be shaped (N, 28, 28) or (28, 28) with N >= 1, got {np.shape(images)}")
    if not (np.isfinite(array).all() and (array == np.round(array)).all() and array.min() >= 0 and array.max() <= 255):
        raise ValueError(f"{name} must hold whole pixel values from 0 to 255")
    return torch.from_numpy(array.astype(np.uint8))


def _keep_mask(mask: Any) -> torch.Tensor:
    """A region name, or a bool keep-mask `(28, 28)` (True = known)."""
    if isinstance(mask, str):
        return region_mask(mask)
    array = np.asarray(mask)
    if array.dtype != bool:
        raise TypeError(f"mask must be a region name or a bool array (True = known), got {array.dtype}")
    if array.shape != (28, 28):
        raise ValueError(f"mask must be shaped (28, 28), got {array.shape}")
    return torch.from_numpy(array.copy())


@dataclass
class Pipeline:
    """A loaded model, its noise schedule, its device and the sampling settings its methods use by default.

    `Pipeline.load()` loads the shipped model; `sample`, `complete` and `interpolate` draw digits;
    `settings(**overrides)` is `defaults` with fields replaced and checked; `passes` says what a digit
    costs; `to(device)` moves the model.
    """

    checkpoint: Checkpoint
    model: nn.Module
    schedule: NoiseSchedule
    device: torch.device
    defaults: SampleConfig = dataclasses.field(default_factory=SampleConfig)

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, *, device: str | None = "auto", use_ema: bool = True,
             defaults: SampleConfig | None = None, threads: int | str | None = "auto") -> Pipeline:
        """The shipped model (`checkpoint=None`), or a checkpoint or exported model written by this
        package; on CUDA when present unless `device` says otherwise (`cpu`, `cuda`, `cuda:N`, `mps`);
        EMA weights unless `use_ema=False`. `threads` sets torch's CPU threads as the command line's
        `--threads` does: "auto" uses the cores other programs leave idle now (on a busy machine,
        threads that wait for a taken core slow everything down), a number as given, None leaves
        torch's setting alone."""
        if defaults is not None and not isinstance(defaults, SampleConfig):
            raise TypeError(f"defaults must be a SampleConfig, got {type(defaults).__name__}")
        if threads is not None and threads != "auto":
            whole("threads", threads, 1, 1024)
        loaded = load_checkpoint(checkpoint)
        config = loaded.model_config
        if config.in_channels != 1 or config.image_size not in IMAGE_SIZES:
            raise ValueError(f"{checkpoint or 'the shipped model'} is for {config.in_channels}-channel "
                             f"{config.image_size}px images; MNIST models here are 1-channel at "
                             f"{' or '.join(map(str, IMAGE_SIZES))}px")
        chosen = pick_device(device)
        if threads is not None:
            torch.set_num_threads(choose_threads(threads))
        return cls(loaded, loaded.build_model(use_ema=use_ema).to(chosen), NoiseSchedule(loaded.diffusion_config),
                   chosen, defaults or model_defaults(config))

    def to(self, device: str | torch.device) -> Pipeline:
        """Move the model to `device` (as `load` reads it) and return this pipeline."""
        self.device = pick_device(str(device))
        self.model.to(self.device)
        return self

    def load_guide(self, checkpoint: str | Path) -> nn.Module:
        """A weaker network of the same data for autoguidance (`generate(guide=...)`): refused unless its
        images, classes, noise schedule and prediction type are this model's."""
        guide = load_checkpoint(checkpoint)
        if guide.diffusion_config != self.checkpoint.diffusion_config:
            raise ValueError(f"the guide {checkpoint} was trained with {guide.diffusion_config}, the model with "
                             f"{self.checkpoint.diffusion_config}: a guide must share the schedule and prediction")
        network = guide.build_model().to(self.device)
        check_guide(network, self.model)
        return network

    @property
    def num_classes(self) -> int:
        return self.checkpoint.model_config.num_classes

    def settings(self, **overrides: Any) -> SampleConfig:
        """`defaults` with the named fields replaced, checked by `SampleConfig` (every value means what it
        means there: `steps=None` is the sampler's default, `guidance_interval="all"` guides every step)."""
        if "batch_size" in overrides:
            raise TypeError("batch_size is ambiguous here: num= says how many digits to draw, max_batch= how many "
                            "one network pass may hold")
        unknown = set(overrides) - {field.name for field in dataclasses.fields(SampleConfig)}
        if unknown:
            raise TypeError(f"unknown sampling setting {', '.join(sorted(unknown))}; SampleConfig has "
                            f"{', '.join(field.name for field in dataclasses.fields(SampleConfig))}")
        return dataclasses.replace(self.defaults, **overrides)

    def steps_for(self, settings: SampleConfig) -> int:
        """The steps `settings` take on this model (`sampling.timesteps_for`)."""
        return len(timesteps_for(settings, self.schedule))

    def last_timestep(self, settings: SampleConfig) -> int:
        """Where `settings` end the walk on this model's schedule."""
        return last_timestep_for(settings.last_timestep, self.schedule.num_timesteps)

    def guidance(self, settings: SampleConfig, conditional: bool, *, guide: bool = False,
                 guide_weight: float | None = None, guide_below: float | None = None) -> Guidance:
        """Which branches each step of `settings` evaluates on this model (`sampling.Guidance`)."""
        return Guidance(conditional and self.num_classes > 0, settings.guidance, settings.guidance_interval,
                        self.checkpoint.model_config.guidance_input, guide, guide_weight, guide_below)

    def passes(self, settings: SampleConfig, conditional: bool, **guide: Any) -> int:
        """Network passes per digit that `settings` cost on this model, counted by the decision the
        denoiser runs (`sampling.count_passes`); `guide`: as `guidance` takes it."""
        return count_passes(self.schedule, settings, self.guidance(settings, conditional, **guide))

    def cost(self, settings: SampleConfig, num: int, conditional: bool) -> str:
        """What drawing `num` digits with `settings` costs, in words, said before the work: steps,
        branches and network passes per digit, and the compiling `settings.compile` asks for first."""
        passes = describe_passes(self.steps_for(settings), self.passes(settings, conditional),
                                 self.checkpoint.model_config.guidance_input)
        first = "; the network is compiled first (a minute or more, less once cached)" if settings.compile else ""
        return f"{num} digits: {passes}{first}"

    def generate(self, num: int, labels: torch.Tensor | None, settings: SampleConfig, generator: torch.Generator, *,
                 callback: Callback = None, noise: torch.Tensor | None = None, guide: nn.Module | None = None,
                 guide_weight: float | None = None, guide_below: float | None = None) -> torch.Tensor:
        """`sampling.generate` on this model and device: `(num, 1, S, S)` in [-1, 1] (from the model's
        black, `ModelConfig.black`, for a model taught it; `to_pixels` makes uint8 of them). The one place
        `sample`, the page and the scoring draw go through. `guide`: a weaker network to guide with
        instead of the unconditional branch (autoguidance, see `load_guide` and `sampling.Denoiser`)."""
        return generate(self.model, self.schedule, num, settings, labels=labels, generator=generator,
                        device=self.device, callback=callback, noise=noise, guide=guide, guide_weight=guide_weight,
                        guide_below=guide_below)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The model's class names in label order: its own, or the digits "0"-"9" (empty: unconditional)."""
        config = self.checkpoint.model_config
        return config.class_names or tuple(str(k) for k in range(config.num_classes))

    def check_classes(self, name: str, values: Any) -> list[int]:
        """The classes asked for as `name`, each a class name of this model or a whole number it knows;
        an error names `name` and what is allowed."""
        if self.num_classes == 0:
            raise ValueError(f"this model is unconditional: {name} cannot choose a class")
        chosen = []
        for value in values:
            if isinstance(value, str) and value in self.class_names:
                chosen.append(self.class_names.index(value))
                continue
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            elif isinstance(value, str):
                known = ", ".join(self.class_names[:12]) + (", ..." if self.num_classes > 12 else "")
                raise ValueError(f"{name} {value!r} is not a class of this model ({known})")
            index = whole(name, value, 0, MAX_CLASS)
            if index >= self.num_classes:
                raise ValueError(f"{name} {index} is not one of this model's {self.num_classes} classes "
                                 f"(0-{self.num_classes - 1})")
            chosen.append(index)
        return chosen

    def to_pixels(self, images: torch.Tensor) -> np.ndarray:
        """Model-space images `(N, 1, S, S)` -> uint8 `(N, 28, 28)` in the training data's polarity (a
        model of dark ink on light paper learned it inverted, and gives it back as it was)."""
        return to_uint8(images, dark_ink=self.checkpoint.model_config.dark_ink).numpy()

    def _from_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 pixels in the data's polarity -> the model's (bright ink on black)."""
        return 255 - pixels if self.checkpoint.model_config.dark_ink else pixels

    def labels(self, num: int | None = None, *, digit: int | str | None = None,
               digits: Iterable[int | str] | None = None, per_digit: int = 10, guidance: float | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor | None, int]:
        """The labels to draw and how many images: `per_digit` of each of `digits` in order, `num` of
        `digit`, or (neither asked) `num` images (default 256) in an even mix of the classes in random
        order, which is unconditional for an unconditional model or guidance 0. Classes are given by
        name or index (`check_classes`)."""
        if digit is not None and digits is not None:
            raise ValueError("give digit (with num) or digits (with per_digit), not both")
        if digits is not None:
            if isinstance(digits, (str, bytes)) or not isinstance(digits, Iterable):
                raise TypeError(f"digits must be a sequence of classes, got {type(digits).__name__}")
            asked = self.check_classes("digits", list(digits))
            if not asked:
                raise ValueError("digits names no class")
            if num is not None:
                raise ValueError("with digits, per_digit says how many of each: leave num out")
            per_digit = whole("per_digit", per_digit, 1, MAX_DIGITS)
            if len(asked) * per_digit > MAX_DIGITS:
                raise ValueError(f"{len(asked)} digits x {per_digit} per digit is more than the {MAX_DIGITS:,} "
                                 f"digits one call may draw")
            return torch.tensor(asked).repeat_interleave(per_digit), len(asked) * per_digit
        num = DEFAULT_NUM if num is None else whole("num", num, 1, MAX_DIGITS)
        if digit is not None:
            return torch.full((num,), self.check_classes("digit", [digit])[0]), num
        if self.num_classes and (guidance if guidance is not None else self.defaults.guidance) > 0:
            labels = torch.arange(num) % self.num_classes
            return labels[torch.randperm(num, generator=generator)], num
        return None, num

    def sample(self, num: int | None = None, *, digit: int | str | None = None,
               digits: Iterable[int | str] | None = None, per_digit: int = 10,
               classes: Iterable[int | str] | None = None, per_class: int | None = None, seed: int | None = None,
               generator: torch.Generator | None = None, callback: Callback = None, **settings: Any) -> np.ndarray:
        """Draw images, uint8 `(N, 28, 28)` in the training data's polarity: `num` of `digit`; `per_digit`
        of each of `digits`, in order (`classes` and `per_class` are the same for a model of other
        things; classes by name or index); or `num` (default 256) in an even mix of the classes.
        `seed` (default 0) or a CPU `generator` draws the noise; `settings` override fields of
        `defaults` (`SampleConfig`: sampler, steps, guidance, guidance_interval, precision, max_batch,
        last_timestep, log_snr_floor, eta, noise_below). `callback` gets each sampler step."""
        return self.sample_with_labels(num, digit=digit, digits=digits, per_digit=per_digit, classes=classes,
                                       per_class=per_class, seed=seed, generator=generator, callback=callback,
                                       **settings)[0]

    def sample_with_labels(self, num: int | None = None, *, digit: int | str | None = None,
                           digits: Iterable[int | str] | None = None, per_digit: int = 10,
                           classes: Iterable[int | str] | None = None, per_class: int | None = None,
                           seed: int | None = None, generator: torch.Generator | None = None,
                           callback: Callback = None, **settings: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """`sample`, and the classes asked for (int64 `(N,)`, None when drawn unconditionally)."""
        if classes is not None:
            if digits is not None:
                raise ValueError("give classes or digits (the same thing), not both")
            digits = classes
        if per_class is not None:
            per_digit = per_class
        config = self.settings(**settings)
        # The same generator shuffles the labels and draws the noise: a seed names one set of digits.
        generator = _generator(seed, generator)
        labels, num = self.labels(num, digit=digit, digits=digits, per_digit=per_digit, guidance=config.guidance,
                                  generator=generator)
        images = self.generate(num, labels, config, generator, callback=callback)
        return self.to_pixels(images), labels.numpy() if labels is not None else None

    def complete(self, images: Any, mask: str | Any = "lower", *, digit: int | None = None, num_per_image: int = 8,
                 method: str = DEFAULT_METHOD, seed: int | None = None, generator: torch.Generator | None = None,
                 guess: bool = True, callback: Callback = None, **settings: Any) -> np.ndarray:
        """Draw the erased part of uint8 digits `(N, 28, 28)` (or one `(28, 28)`): `mask` is a region
        name (`completion.MASK_REGIONS`) or a bool keep-mask `(28, 28)`, True = known; erased pixels
        are never read. Returns `num_per_image` completions of each, input-major: uint8
        `(N * num_per_image, 28, 28)`. With `digit`, each completes as that digit (guided). Without, a
        conditional model first guesses the digit the known strokes begin (`completion.guess_digit`)
        and completes as that one (unguided: the label alone steers); `guess=False` completes as
        whatever the strokes become. `settings`: fields of `SampleConfig` (RePaint takes steps,
        guidance, guidance_interval, precision and max_batch; `method="replace"` the sampler's too)."""
        return self.complete_with_digits(images, mask, digit=digit, num_per_image=num_per_image, method=method,
                                         seed=seed, generator=generator, guess=guess, callback=callback,
                                         **settings)[0]

    def complete_with_digits(self, images: Any, mask: str | Any = "lower", *, digit: int | None = None,
                             num_per_image: int = 8, method: str = DEFAULT_METHOD, seed: int | None = None,
                             generator: torch.Generator | None = None, guess: bool = True, callback: Callback = None,
                             **settings: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """`complete`, and the digit each input was completed as, `(N,)` (None: as whatever it becomes)."""
        pixels, keep = self._from_pixels(_pixels("images", images)), _keep_mask(mask)
        num_per_image = whole("num_per_image", num_per_image, 1, MAX_DIGITS)
        if len(pixels) * num_per_image > MAX_DIGITS:
            raise ValueError(f"{len(pixels)} images x {num_per_image} completions is more than the {MAX_DIGITS:,} "
                             f"digits one call may draw")
        if not isinstance(guess, bool):
            raise TypeError(f"guess must be True or False, got {guess!r}")
        config = self.settings(**settings)
        model_config = self.checkpoint.model_config
        model_images, model_mask = model_inputs(pixels, keep.expand(len(pixels), 28, 28),
                                                model_config.image_size, model_config.black)
        generator = _generator(seed, generator)
        walk, guessing = self.completion_walk(config, digit, guess)
        if digit is not None:
            labels = torch.full((len(pixels),), self.check_classes("digit", [digit])[0])
        elif guessing:
            labels = guess_digit(self.model, self.schedule, model_images, model_mask, generator=generator,
                                 max_batch=config.max_batch, device=self.device,
                                 precision=resolve_precision(config.precision, self.device))
        else:
            labels = None
        config = walk
        completed = complete(self.model, self.schedule, model_images, model_mask, config,
                             num_per_image=num_per_image, labels=labels, method=method, generator=generator,
                             device=self.device, callback=callback)
        return self.to_pixels(completed), labels.numpy() if labels is not None else None

    def completion_walk(self, settings: SampleConfig, digit: Any, guess: bool) -> tuple[SampleConfig, bool]:
        """The settings a completion runs with, and whether it guesses the class first: a chosen `digit`
        is guided as `settings` say; a guessed class (or none) steers by its label alone (guidance 1)."""
        guessing = digit is None and guess and self.num_classes > 0
        return (settings if digit is not None else dataclasses.replace(settings, guidance=1.0)), guessing

    def interpolate(self, *, seeds: tuple[int, int] | None = None, digit: int | None = None,
                    digits: tuple[int, int] | None = None, frames: int = 8, seed: int | None = None,
                    callback: Callback = None, **settings: Any) -> np.ndarray:
        """`frames` digits, uint8 `(frames, 28, 28)`: a walk between two seeds' noise (of `digit`, when
        given), or between two `digits` drawn from one `seed`'s noise. The end frames are the digits
        `sample` draws for the same seed, class and settings (`settings`: fields of `SampleConfig`)."""
        if (seeds is None) == (digits is None):
            raise ValueError("give seeds=(a, b) (with digit=d on a conditional model) or digits=(a, b)")
        if digits is not None and digit is not None:
            raise ValueError("digit applies to a walk between seeds; a walk between digits names both in digits")
        pair = seeds if seeds is not None else digits
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Iterable) or len(list(pair)) != 2:
            raise ValueError(f"{'seeds' if seeds is not None else 'digits'} must be a pair (a, b), got {pair!r}")
        frames = whole("frames", frames, 2, MAX_FRAMES)
        config = self.settings(**settings)
        common = {"device": self.device, "callback": callback}
        if seeds is not None:
            ends = tuple(whole("seeds", value, 0, MAX_SEED) for value in seeds)
            chosen = None if digit is None else self.check_classes("digit", [digit])[0]
            walk = interpolate_seeds(self.model, self.schedule, ends, frames, config, digit=chosen, **common)
        else:
            ends = tuple(self.check_classes("digits", list(digits)))  # type: ignore[arg-type]
            start = whole("seed", 0 if seed is None else seed, 0, MAX_SEED)
            walk = interpolate_digits(self.model, self.schedule, ends, frames, config, seed=start, **common)
        return self.to_pixels(walk)


def save_grid(images: Any, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Write uint8 digits `(N, 28, 28)` as one PNG grid of `nrow` per row (square by default), atomically."""
    from .figures import save_grid as save_tensor_grid

    pixels = _pixels("images", images)
    if nrow is not None:
        whole("nrow", nrow, 1, 10_000)
    whole("scale", scale, 1, 16)
    return save_tensor_grid(pixels, path, nrow=nrow, scale=scale)
