"""Configuration dataclasses: the single source of truth for a model, its diffusion and its training.

A checkpoint stores `ModelConfig` and `DiffusionConfig` as JSON, so the file alone rebuilds the
network and its noise schedule; nothing in the code base hard-codes a size, a step count or a device.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

BetaSchedule = Literal["linear", "cosine"]
PredictionType = Literal["epsilon", "v"]

BETA_SCHEDULES: tuple[str, ...] = ("linear", "cosine")
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "v")

# Limits on what a config may ask for, so a crafted checkpoint header cannot make the package
# allocate gigabytes before anything is checked (the README lists them). The largest preset,
# unet-256, has 256 channels at its widest level, 3 levels and 2 blocks.
MAX_IMAGE_SIZE = 128
MAX_LEVEL_CHANNELS = 1024
MAX_LEVELS = 5
MAX_RES_BLOCKS = 8
MAX_CLASSES = 1000
MAX_TIMESTEPS = 100_000
MAX_SEED = 2**63 - 1  # torch.Generator seeds are 64-bit
MAX_STUDENT_STEPS = 64
MAX_BLACK_MARGIN = 0.5  # in model units, where [-1, 1] spans 0-255
# A student's sampler, by how it was distilled (`distill.py`, `train --distillation`): the DDIM step a
# progressive student's targets are made for, or a consistency student's (Song et al. 2023, Alg. 1).
DISTILLATIONS: dict[str, str] = {"progressive": "ddim", "consistency": "consistency"}
STUDENT_SAMPLERS: tuple[str, ...] = tuple(DISTILLATIONS.values())
DEFAULT_STUDENT_STEPS = 4  # a distillation's student steps unless told: half the default walk's 8


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number in [{low}, {high}], got {value!r}")


_FIELD_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_field_types(config: Any) -> None:
    """`ValueError` naming the first field of a config dataclass whose value is not of its declared
    type (`int`, `float`, `str`, `bool`, optionally `| None`; a float must be finite). Values read
    back from JSON (a checkpoint header) pass through here before any range check compares them."""
    for field in dataclasses.fields(config):
        declared = str(field.type)
        optional = declared.endswith(" | None")
        allowed = _FIELD_TYPES.get(declared.removesuffix(" | None"))
        value = getattr(config, field.name)
        if allowed is None or (optional and value is None):
            continue
        if type(value) not in allowed or (type(value) is float and not math.isfinite(value)):
            kind = {"int": "a whole number", "float": "a finite number", "str": "text", "bool": "true or false"}
            raise ValueError(f"{field.name} must be {kind[declared.removesuffix(' | None')]}"
                             f"{' or null' if optional else ''}, got {value!r}")


MAX_CLASS_NAME = 64


def check_class_names(names: tuple[str, ...], num_classes: int) -> None:
    """`ValueError` unless `names` is empty or names each of `num_classes` classes once: text of 1 to
    64 characters, without a comma (a list of classes is written `a,b,c`) or a control character."""
    if not names:
        return
    if len(names) != num_classes:
        raise ValueError(f"class_names names {len(names)} classes, the model has {num_classes}")
    for name in names:
        if (type(name) is not str or not 1 <= len(name) <= MAX_CLASS_NAME or name != name.strip() or "," in name
                or not name.isprintable()):
            raise ValueError(f"each class name must be 1-{MAX_CLASS_NAME} printable characters without a comma "
                             f"or surrounding spaces, got {name!r}")
    if len(set(names)) != len(names):
        raise ValueError("class names must differ from each other")


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the denoising UNet.

    `channel_mults[i]` scales `base_channels` at level `i`; each level after the first halves the
    resolution, so `image_size` must be divisible by `2 ** (len(channel_mults) - 1)`.
    `attention_resolutions` lists the feature-map sizes (e.g. 7 for 28 -> 14 -> 7) that get
    self-attention. `num_classes = 0` makes an unconditional model; otherwise the model learns one
    extra "null" label (index `num_classes`) for classifier-free guidance. `guidance_input = True`
    (conditional models only) gives the network the guidance weight as an input, so one pass draws
    a guided digit (guidance-free training, Chen et al. 2025; see `UNet.forward`).
    `student_steps = N` (N >= 1) marks a student distilled from a teacher's walk (`distill.py`): it
    draws in N steps of one pass each, its own walk (`model_defaults`), with `student_sampler`: "ddim"
    (deterministic steps, progressive distillation) or "consistency" (a clean image each step, noised
    afresh to the next: consistency distillation); 0 is a model that learned from noise and draws with
    the product's defaults.
    `black_margin = m` (m > 0) teaches the model exact black: data pixels of 0 are learned at -1 - m
    instead of -1, so the network's small errors on a black background fall below -1, where images
    are clamped to black (`data.to_model_space`, `Denoiser`); 0 keeps the plain [-1, 1] encoding.
    `class_names` names the classes in label order (empty: the digits 0-9, or none for an
    unconditional model); `dark_ink` says the training data was dark ink on light paper, which the
    model learned inverted (bright on black) and gives back inverted (`datasets.prepare`).
    """

    image_size: int = 28
    in_channels: int = 1
    base_channels: int = 32
    channel_mults: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (7,)
    dropout: float = 0.0
    num_classes: int = 10
    norm_groups: int = 8
    guidance_input: bool = False
    class_names: tuple[str, ...] = ()
    dark_ink: bool = False
    student_steps: int = 0
    student_sampler: str = STUDENT_SAMPLERS[0]
    black_margin: float = 0.0

    def __post_init__(self) -> None:
        # JSON gives lists back; keep tuples so configs compare and hash the same after a round trip.
        for name in ("channel_mults", "attention_resolutions", "class_names"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"{name} must be a list, got {getattr(self, name)!r}")
            object.__setattr__(self, name, tuple(getattr(self, name)))
        check_field_types(self)
        check_class_names(self.class_names, self.num_classes)
        levels = len(self.channel_mults)
        if not 1 <= levels <= MAX_LEVELS:
            raise ValueError(f"channel_mults needs 1 to {MAX_LEVELS} levels, got {levels}")
        _check_int("image_size", self.image_size, 4, MAX_IMAGE_SIZE)
        _check_int("in_channels", self.in_channels, 1, 4)
        _check_int("base_channels", self.base_channels, 1, MAX_LEVEL_CHANNELS)
        _check_int("num_res_blocks", self.num_res_blocks, 1, MAX_RES_BLOCKS)
        _check_int("num_classes", self.num_classes, 0, MAX_CLASSES)
        _check_int("norm_groups", self.norm_groups, 1, MAX_LEVEL_CHANNELS)
        _check_int("student_steps", self.student_steps, 0, MAX_STUDENT_STEPS)
        if self.student_sampler not in STUDENT_SAMPLERS:
            raise ValueError(f"student_sampler must be one of {', '.join(STUDENT_SAMPLERS)}, "
                             f"got {self.student_sampler!r}")
        for mult in self.channel_mults:
            _check_int("each of channel_mults", mult, 1, MAX_LEVEL_CHANNELS)
            if self.base_channels * mult > MAX_LEVEL_CHANNELS:
                raise ValueError(f"a level of {self.base_channels * mult} channels exceeds the limit of "
                                 f"{MAX_LEVEL_CHANNELS}")
        for size in self.attention_resolutions:
            _check_int("each of attention_resolutions", size, 1, MAX_IMAGE_SIZE)
        if self.image_size % (2 ** (levels - 1)) != 0:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by 2**{levels - 1} "
                f"for {levels} resolution levels"
            )
        for mult in self.channel_mults:
            if (self.base_channels * mult) % self.norm_groups != 0:
                raise ValueError(
                    f"every level's channels must be divisible by norm_groups={self.norm_groups}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.black_margin <= MAX_BLACK_MARGIN:
            raise ValueError(f"black_margin must be in [0, {MAX_BLACK_MARGIN}], got {self.black_margin}")
        if type(self.guidance_input) is not bool:
            raise ValueError(f"guidance_input must be true or false, got {self.guidance_input!r}")
        if self.guidance_input and not self.conditional:
            raise ValueError("guidance as a network input needs a class-conditional model")

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def black(self) -> float:
        """The value the network learned for a pixel of exactly 0 (see `black_margin`)."""
        return -1.0 - self.black_margin


@dataclass(frozen=True)
class DiffusionConfig:
    """The noise schedule and what the network predicts. The network itself never sees this."""

    num_timesteps: int = 1000
    beta_schedule: BetaSchedule = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: PredictionType = "epsilon"

    def __post_init__(self) -> None:
        check_field_types(self)
        _check_int("num_timesteps", self.num_timesteps, 2, MAX_TIMESTEPS)
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError("need 0 < beta_start <= beta_end < 1")


def _option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A config field that is also a command-line option: its default, help text and choices."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices})


LR_DECAYS = ("cosine", "none")
TIMESTEP_SAMPLINGS = ("uniform", "lognormal")
TRAIN_PRECISIONS = ("fp32", "bf16", "auto")


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Stops at whichever of `max_steps`, `epochs`, `max_minutes` comes first.

    Every field is a `train` flag of the same name (`--max-steps` for `max_steps`), with the help
    text in its metadata; `__post_init__` is the one validator of them all.
    """

    batch_size: int = _option(128, "digits per optimizer step, over all processes")
    lr: float = _option(1e-3, "peak learning rate of AdamW")
    weight_decay: float = _option(0.0, "AdamW weight decay")
    warmup_steps: int = _option(200, "steps of linear learning-rate warm-up")
    lr_decay: str = _option("cosine", "cosine: decay to 0 over the run's limit after warm-up (steps, epochs or "
                                      "minutes); none: constant", choices=LR_DECAYS)
    min_snr_gamma: float = _option(5.0, "min-SNR-gamma loss weighting (Hang et al. 2023); 0 is plain MSE")
    timestep_sampling: str = _option("uniform", "noise levels to train on: uniform over the T steps, or lognormal: "
                                                "ln(sigma) ~ N(mean, std^2) (Karras et al. 2022)",
                                     choices=TIMESTEP_SAMPLINGS)
    lognormal_mean: float = _option(-1.2, "mean of ln(sigma) for --timestep-sampling lognormal")
    lognormal_std: float = _option(1.2, "spread of ln(sigma) for --timestep-sampling lognormal")
    grad_clip: float = _option(1.0, "clip the gradient norm to this; 0: no clipping")
    epochs: float | None = _option(None, "passes over the 60,000 training digits")
    max_steps: int | None = _option(None, "optimizer steps")
    max_minutes: float | None = _option(None, "wall-clock budget, counted across resumes")
    ema_decay: float = _option(0.999, "decay of the exponential moving average of the weights")
    ema_warmup_steps: int = _option(100, "steps the average copies the weights before it starts averaging")
    p_uncond: float = _option(0.1, "probability of dropping the label (classifier-free guidance training)")
    seed: int = _option(0, "random seed: initial weights, data order and every draw of every step")
    checkpoint_every: int = _option(500, "steps between checkpoints")
    keep_checkpoints: int = _option(3, "newest checkpoints kept in RUN_DIR/checkpoints")
    sample_every: int = _option(1000, "steps between sample grids in RUN_DIR/samples")
    log_every: int = _option(50, "steps between lines of RUN_DIR/metrics.jsonl")
    teacher: str | None = _option(None, "distil a trained model's sampling walk instead of learning from noise: "
                                        "'shipped' or a checkpoint; the student starts as this model and learns "
                                        "to draw in --student-steps passes (see distill.py)")
    precision: str = _option("auto", "the network's arithmetic while training: fp32, bf16 (bfloat16 autocast; "
                                     "the loss, gradients, optimizer and weights stay fp32), or auto: bf16 "
                                     "where the device computes it natively", choices=TRAIN_PRECISIONS)

    def __post_init__(self) -> None:
        check_field_types(self)
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        for name in ("weight_decay", "warmup_steps", "grad_clip", "ema_warmup_steps", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.seed > MAX_SEED:
            raise ValueError(f"seed must be at most 2**63 - 1, got {self.seed}")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose from {', '.join(TRAIN_PRECISIONS)}")
        if self.lr_decay not in LR_DECAYS:
            raise ValueError(f"unknown LR decay {self.lr_decay!r}; choose from {', '.join(LR_DECAYS)}")
        if self.timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(f"unknown timestep sampling {self.timestep_sampling!r}; choose from "
                             f"{', '.join(TIMESTEP_SAMPLINGS)}")
        if not (math.isfinite(self.lognormal_mean) and math.isfinite(self.lognormal_std) and self.lognormal_std > 0):
            raise ValueError(f"the log-normal timestep law needs a finite mean and a positive std, got "
                             f"{self.lognormal_mean}, {self.lognormal_std}")
        if self.min_snr_gamma < 0:
            raise ValueError(f"min-SNR gamma must be >= 0, got {self.min_snr_gamma}")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max steps must be at least 1, got {self.max_steps}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max minutes must be positive, got {self.max_minutes}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {self.p_uncond}")
        if self.teacher is not None and not self.teacher.strip():
            raise ValueError("teacher must name a checkpoint or 'shipped', got nothing")
        for name in ("checkpoint_every", "keep_checkpoints", "sample_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


FEW_STEPS = 8  # timesteps the few-step samplers visit when no count is asked for; DDPM visits all T

# What a sampling request may name; `solvers.SAMPLERS` holds the update rules under these names.
SAMPLER_NAMES: tuple[str, ...] = ("consistency", "ddim", "ddpm", "dpm++2m", "dpm++2m-sde", "unipc")
SAMPLE_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")
# Largest guidance weight accepted: far past any useful value (w = 3 already costs much variety)
# while refusing nonsense such as 1e308, which drew pure noise.
MAX_GUIDANCE = 20.0
MAX_BATCH = 4096  # digits one network pass may hold
MAX_SAMPLE_STEPS = 100_000
# `last_timestep` is counted on a 1000-step schedule; a walk needs two levels, so it ends by 998.
MAX_LAST_TIMESTEP = 998
# The samplers that take each stochastic setting; any other sampler refuses it.
STOCHASTIC_SETTINGS: dict[str, tuple[str, ...]] = {"eta": ("ddim", "dpm++2m-sde"), "noise_below": ("dpm++2m-sde",)}
ALL_STEPS = "all"  # the guidance interval that guides every step


def _sample_option(default: Any, help: str, *, choices: tuple[str, ...] | None = None, metavar: str | None = None,
                   flag: str | None = None, aliases: tuple[str, ...] = ()) -> Any:
    """A `SampleConfig` field and its command-line option: default, help, choices, and the flag's name
    when it is not the field's (`--max-batch` keeps `--batch-size` as an alias)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar,
                                                        "flag": flag, "aliases": aliases})


def check_interval(interval: Any) -> tuple[float, float] | str:
    """`interval` as `SampleConfig.guidance_interval` holds it: "all", or (low, high) shares of T with
    0 <= low <= high <= 1 (a list from JSON becomes a tuple); `ValueError` naming the setting otherwise."""
    if interval == ALL_STEPS:
        return ALL_STEPS
    if (isinstance(interval, (tuple, list)) and len(interval) == 2
            and all(type(v) in (int, float) and math.isfinite(v) for v in interval)
            and 0.0 <= interval[0] <= interval[1] <= 1.0):
        return float(interval[0]), float(interval[1])
    raise ValueError(f"guidance_interval is (low, high), shares of T with 0 <= low <= high <= 1, or 'all', "
                     f"got {interval!r}")


@dataclass(frozen=True)
class SampleConfig:
    """How digits are drawn: the one source of the sampling settings that the command line (each field
    is a flag of the same name, `--guidance-interval` for `guidance_interval`), the page, the Python API
    (`Pipeline`), `generate`, `complete`, `interpolate_*` and the benchmarks read. `__post_init__` is
    the one validator of them all; a setting that depends on the model (steps beyond its T, an end point
    above its log-SNR floor) is checked against it by `sampling.timesteps_for`.

    Each default was chosen by measurement on the shipped model; the measurements, and the model
    card's numbers, live in `benchmarks/results/` (solver.md for the sampler, its spacing, end point and
    guidance weight; sampling.md for steps and interval; inference_speed.md for the batch).
    """

    # UniPC-2 (Zhao et al. 2023): DPM-Solver++(2M) corrected at no extra pass
    sampler: str = _sample_option("unipc", "sampling algorithm", choices=SAMPLER_NAMES)
    steps: int | None = _sample_option(None, "timesteps the sampler visits, each one network evaluation per digit "
                                             "(two where guidance mixes two branches), the last included "
                                             f"(default: {FEW_STEPS}; ddpm: every timestep)")
    guidance: float = _sample_option(1.25, f"classifier-free guidance weight w in [0, {MAX_GUIDANCE:g}]: "
                                           "0 unconditional, 1 conditional, >1 sharper digits")
    # Guidance matters where the digit's identity forms (Kynkaanniemi et al. 2024): with 8 steps the
    # default interval guides 2 of them, 10 network passes per digit.
    guidance_interval: tuple[float, float] | str = _sample_option(
        (0.3, 0.7), "guide only where t/T lies in [LOW, HIGH] and use the conditional branch alone elsewhere, one "
                    "network pass instead of two (Kynkaanniemi et al. 2024); 'all' guides every step",
        metavar="LOW,HIGH")
    precision: str = _sample_option("auto", "the network's arithmetic while sampling: bf16 (bfloat16, about 2x "
                                            "faster on a CPU with AVX-512 BF16 or AMX and on recent GPUs), fp32, or "
                                            "auto: bf16 where the device computes it natively, else fp32",
                                    choices=SAMPLE_PRECISIONS)
    # In the clean image a step predicts, bf16's rounding of the predicted noise is magnified by sigma / alpha,
    # about 160x at pure noise; a walk whose first step is long carries that into every later step
    # (a distilled student's: benchmarks/results/distill_ab.md, its bf16 rows). The default walk's is short.
    fp32_from: float | None = _sample_option(None, "run the steps at t/T >= SHARE in fp32 whatever --precision "
                                                   "says (1: the first step, from pure noise; default: none)",
                                             metavar="SHARE")
    # Small batches stay in a CPU's cache (benchmarks/results/inference_speed.md).
    max_batch: int = _sample_option(64, "digits per network pass, at most (memory and speed, not how many digits)",
                                    flag="--max-batch", aliases=("--batch-size",))
    # Inductor's fused kernels: faster passes after a start-up that only many thousands of digits pay back
    # (benchmarks/results/faster-cleaner-2026-12-07.md), so off by default.
    compile: bool = _sample_option(False, "compile the network with torch.compile before drawing: faster passes "
                                          "after a start-up of a minute or more (less once an earlier run cached "
                                          "the kernels), worth it for tens of thousands of digits")
    # The walk ends at this timestep (counted on a 1000-step schedule, scaled to others), and its last
    # step returns the clean image predicted there: t = 0 still holds noise the network removes poorly,
    # which showed as a faint haze and saturated strokes (benchmarks/results/last_timestep.md, solver.md).
    last_timestep: int = _sample_option(25, f"end the walk at this timestep, counted on a 1000-step schedule "
                                            f"(0-{MAX_LAST_TIMESTEP}), and return the clean image predicted there")
    # The "logsnr" spacing's first step jumps from pure noise to this log(abar / (1 - abar)); the other
    # steps are even in log-SNR above it (`sampling.make_timesteps`, benchmarks/results/solver.md).
    log_snr_floor: float = _sample_option(-5.0, "the logsnr spacing's first step jumps from pure noise to this "
                                                "log-SNR; the other steps are even above it")
    eta: float | None = _sample_option(None, "ddim and dpm++2m-sde only: noise per step, 0 deterministic to 1 "
                                             "(ddim: DDPM's variance; default 0); dpm++2m-sde: the SDE solver "
                                             "(default 1)")
    noise_below: float | None = _sample_option(None, "dpm++2m-sde only: fresh noise only on the steps leaving from "
                                                     "t/T below SHARE, the ODE's step above (default: every step)",
                                               metavar="SHARE")

    def __post_init__(self) -> None:
        object.__setattr__(self, "guidance_interval", check_interval(self.guidance_interval))
        check_field_types(self)
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLER_NAMES)}, got {self.sampler!r}")
        if self.steps is not None:
            _check_int("steps", self.steps, 1, MAX_SAMPLE_STEPS)
        if not 0.0 <= self.guidance <= MAX_GUIDANCE:
            raise ValueError(f"guidance must be in [0, {MAX_GUIDANCE:g}], got {self.guidance}")
        if self.precision not in SAMPLE_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(SAMPLE_PRECISIONS)}, got {self.precision!r}")
        _check_int("max_batch", self.max_batch, 1, MAX_BATCH)
        _check_int("last_timestep", self.last_timestep, 0, MAX_LAST_TIMESTEP)
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {self.eta}")
        if self.fp32_from is not None and not 0.0 <= self.fp32_from <= 1.0:
            raise ValueError(f"fp32_from is a share of T in [0, 1], got {self.fp32_from}")
        if self.noise_below is not None and not 0.0 < self.noise_below <= 1.0:
            raise ValueError(f"noise_below is a share of T in (0, 1], got {self.noise_below}")
        for name, samplers in STOCHASTIC_SETTINGS.items():
            if getattr(self, name) is not None and self.sampler not in samplers:
                raise ValueError(f"{name} applies only to sampler {' or '.join(samplers)}, not {self.sampler}")

    def sampler_kwargs(self) -> dict[str, float]:
        """The stochastic settings given, as the sampler's keyword arguments (`solvers.SAMPLERS`)."""
        return {name: getattr(self, name) for name in STOCHASTIC_SETTINGS if getattr(self, name) is not None}

    def summary(self) -> str:
        """These settings in the words the README and the model card use (tests/test_docs.py checks
        that both say the defaults' summary): '8 steps of `unipc` ending at t = 25, guidance 1.25 on
        t/T 0.3-0.7'. Steps left to the sampler are `FEW_STEPS`; guidance 1 names no interval."""
        interval = self.guidance_interval
        where = "every step" if interval == ALL_STEPS else f"t/T {interval[0]:g}-{interval[1]:g}"
        guided = f"guidance {self.guidance:g}" + (f" on {where}" if self.guidance != 1.0 else "")
        fp32 = "" if self.fp32_from is None else f", fp32 on t/T >= {self.fp32_from:g}"
        return f"{self.steps or FEW_STEPS} steps of `{self.sampler}` ending at t = {self.last_timestep}, {guided}{fp32}"


# A progressive student's first step, from pure noise to mid-walk, in fp32 (`SampleConfig.fp32_from`):
# bf16's rounding, magnified in the clean image at pure noise, is carried on. A consistency student's
# lands at log-SNR -5, where alpha = 0.08: measured the same all in bf16 (results/distill_ab.md).
STUDENT_FP32_FROM = 1.0


def student_settings(steps: int, sampler: str = STUDENT_SAMPLERS[0]) -> SampleConfig:
    """How a student distilled to `steps` passes is drawn: its sampler (`ModelConfig.student_sampler`)
    on its grid, the conditional branch alone (the teacher's guidance is in its weights)."""
    fp32_from = STUDENT_FP32_FROM if sampler == STUDENT_SAMPLERS[0] else None
    return SampleConfig(sampler=sampler, steps=steps, guidance=1.0, fp32_from=fp32_from)


def model_defaults(model: ModelConfig) -> SampleConfig:
    """The sampling settings a model is drawn with unless told otherwise: the product's defaults
    (`SampleConfig()`), or a distilled student's own walk."""
    if model.student_steps:
        return student_settings(model.student_steps, model.student_sampler)
    return SampleConfig()


# Presets. "small" is the default: native 28x28, quick on a CPU. "seed-002" is the scale of the
# classic 2.3M-parameter MNIST DDPM recipe (T=300, Adam 1e-4; README, "The write-ups this grew
# from"); "unet-256" is a 64-128-256 UNet of the size common in DDPM tutorials.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                        attention_resolutions=(), norm_groups=4),
    "small": ModelConfig(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
                         attention_resolutions=(7,)),
    "medium": ModelConfig(base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=2,
                          attention_resolutions=(7,)),
    "seed-002": ModelConfig(base_channels=32, channel_mults=(1, 2, 3), num_res_blocks=2,
                            attention_resolutions=(7,)),
    "unet-256": ModelConfig(base_channels=64, channel_mults=(1, 2, 4), num_res_blocks=2,
                            attention_resolutions=(7,)),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """Return the named preset, with any fields replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys with a clear message."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    return cls(**data)


__all__ = [
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "PRESETS",
    "DiffusionConfig",
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "check_interval",
    "from_dict",
    "preset",
    "to_dict",
]
