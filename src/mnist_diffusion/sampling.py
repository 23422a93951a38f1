"""The walk a sampler takes and what it calls at each step: the timesteps (`make_timesteps`), the
guided denoiser (`Denoiser`), what a digit costs (`count_passes`) and `generate`, which runs one of the
update rules of `solvers.py` over batches of digits. Every setting comes from one `SampleConfig`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import ALL_STEPS, FEW_STEPS, MAX_GUIDANCE, SampleConfig, check_interval
from .devices import PRECISIONS, compiled_network, resolve_precision, revisit_threads
from .schedule import NoiseSchedule, timestep_share
from .solvers import SAMPLERS, Callback, Prediction

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
        if log_snr_floor >= float(log_snr[last]):
            raise ValueError(f"the log-SNR floor {log_snr_floor:g} must lie below the last level's "
                             f"log-SNR ({float(log_snr[last]):.2f} at t = {last})")
        steps = _logsnr_steps(log_snr.double(), num_inference_steps, last, log_snr_floor)
    return _strictly_descending(steps.round().long(), num_timesteps) if last == 0 else \
        _strictly_descending(steps.round().long() - last, num_timesteps - last) + last


def _logsnr_steps(table: torch.Tensor, count: int, last: int, floor: float) -> torch.Tensor:
    """`count` timesteps (float, unrounded) from T-1 to `last`, even in the log-SNR `table` from
    T-1, or, when log-SNR(T-1) lies below `floor`, T-1 and then `count - 1` even from the floor."""
    jump = floor > float(table[-1])
    lowest = floor if jump else float(table[-1])
    fraction = torch.linspace(1, 0, count - 1 if jump else count, dtype=torch.float64)
    targets = lowest + (1 - fraction) * (table[last] - lowest)  # rising log-SNR
    steps = (table[None, :] - targets[:, None]).abs().argmin(dim=1).double()
    steps = torch.cat([torch.tensor([len(table) - 1.0], dtype=torch.float64), steps]) if jump else steps
    steps[0] = len(table) - 1
    return steps


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


# Each sampler's best spacing on the analytic Gaussian tests (tests/test_sampling.py); consistency's is
# the default walk's, the grid a consistency student learns on (`distill.Legs.consistency`).
DEFAULT_SPACING: dict[str, str] = {"consistency": "logsnr", "ddpm": "quadratic", "ddim": "quadratic",
                                   "dpm++2m": "logsnr", "dpm++2m-sde": "logsnr", "unipc": "logsnr"}


def default_steps(sampler: str, num_timesteps: int) -> int:
    """Steps a sampler takes when none are asked for: every timestep for ddpm, else `FEW_STEPS`."""
    return num_timesteps if sampler == "ddpm" else min(FEW_STEPS, num_timesteps)


def timesteps_for(settings: SampleConfig, schedule: NoiseSchedule, spacing: str | None = None) -> torch.Tensor:
    """The timesteps `settings` visit on this schedule `(N,)`, descending: `settings.steps` (or the
    sampler's default, at most the room above the end point) from T-1 down to `settings.last_timestep`
    scaled to T, in the sampler's spacing unless `spacing` names another. `ValueError` naming the
    setting when the model cannot take it."""
    num_timesteps = schedule.num_timesteps
    last = last_timestep_for(settings.last_timestep, num_timesteps)
    room = num_timesteps - last  # timesteps from T-1 down to the last
    steps = settings.steps or min(default_steps(settings.sampler, num_timesteps), room)
    if steps > room:
        raise ValueError(f"steps {steps} exceeds the model's {room} timesteps down to t = {last}")
    spacing = spacing or DEFAULT_SPACING[settings.sampler]
    if spacing == "logsnr" and settings.log_snr_floor >= float(schedule.log_snr[last]):
        above = (schedule.log_snr > settings.log_snr_floor).nonzero()
        highest = round(int(above.max()) * 1000 / num_timesteps) if len(above) else 0
        raise ValueError(f"last_timestep {settings.last_timestep} ends the walk below the log-SNR floor "
                         f"{settings.log_snr_floor:g} where {settings.sampler}'s first step lands; on this model it "
                         f"must be at most {max(highest - 1, 0)}")
    return make_timesteps(num_timesteps, steps, spacing, schedule.log_snr, last, settings.log_snr_floor)


GuidanceInterval = tuple[float, float] | str  # (low, high) shares of T, or "all"


def guided_at(t: int, num_timesteps: int, interval: GuidanceInterval) -> bool:
    """Whether guidance applies at timestep `t`: at every step for "all", else when t / (T - 1) lies
    in [low, high] (guidance in a limited interval of noise levels, Kynkaanniemi et al. 2024)."""
    if interval == ALL_STEPS:
        return True
    return interval[0] <= timestep_share(t, num_timesteps) <= interval[1]


# What a step evaluates, and its cost in network passes per digit.
BRANCH_PASSES: dict[str, int] = {
    "unconditional": 1,  # the null label
    "conditional": 1,  # the label alone (w = 1, or outside the guidance interval)
    "learned": 1,  # a network with a guidance input (`ModelConfig.guidance_input`) given w >= 1
    "classifier-free": 2,  # conditional and unconditional branch in one batched call
    "autoguidance": 2,  # the model's and the guide network's conditional outputs
}


@dataclass(frozen=True)
class Guidance:
    """How each step of a walk is guided: the one decision of which branches a step evaluates
    (`branches`), read by `Denoiser` to run them and by `count_passes` to count them.

    `conditional`: labels are given to a class-conditional model. `learned`: the network takes the
    guidance weight as an input. `guide`: an autoguidance network is given, with `guide_weight`
    (default: `weight`) and `guide_below` (a share of T: only guided steps below it are autoguided).
    """

    conditional: bool
    weight: float
    interval: GuidanceInterval = ALL_STEPS
    learned: bool = False
    guide: bool = False
    guide_weight: float | None = None
    guide_below: float | None = None

    def __post_init__(self) -> None:
        for name, weight in (("guidance", self.weight), ("guide_weight", self.guide_weight)):
            if weight is not None and not 0 <= weight <= MAX_GUIDANCE:
                raise ValueError(f"{name} must be in [0, {MAX_GUIDANCE:g}], got {weight}")
        if not self.guide and (self.guide_weight is not None or self.guide_below is not None):
            raise ValueError("a guide weight or a guide_below share needs a guide network")
        if self.guide and (not self.conditional or self.weight == 0):
            raise ValueError("a guide network guides a conditional draw: give labels and a guidance weight above 0")
        if self.guide_below is not None and not 0 < self.guide_below <= 1:
            raise ValueError(f"guide_below is a share of T in (0, 1], got {self.guide_below}")

    def branches(self, t: int, num_timesteps: int) -> str:
        """What step `t` evaluates: a key of `BRANCH_PASSES`."""
        if not self.conditional or self.weight == 0:
            return "unconditional"
        if not guided_at(t, num_timesteps, self.interval):
            return "conditional"
        if self.guide and (self.guide_below is None or timestep_share(t, num_timesteps) < self.guide_below):
            return "conditional" if self.guide_weight_or_weight == 1 else "autoguidance"
        if self.weight == 1:
            return "conditional"
        return "learned" if self.learned and self.weight > 1 else "classifier-free"

    @property
    def guide_weight_or_weight(self) -> float:
        return self.weight if self.guide_weight is None else self.guide_weight


def count_passes(schedule: NoiseSchedule, settings: SampleConfig, guidance: Guidance) -> int:
    """Network passes per digit that `settings` cost: `guidance.branches` summed over the timesteps
    `timesteps_for` gives, the same decision `Denoiser` runs (a test counts the calls)."""
    timesteps = timesteps_for(settings, schedule)
    return sum(BRANCH_PASSES[guidance.branches(t, schedule.num_timesteps)] for t in timesteps.tolist())


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
    """Turn a network into `denoise(x_t, t) -> (x0_hat, eps_hat)`, evaluating at each step the branches
    `Guidance.branches` names.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6, written with the unconditional output as
    the base): out = out_uncond + w (out_cond - out_uncond), so w = 0 is unconditional and w = 1
    purely conditional; both branches run in one batched forward pass. Outside the guidance interval
    the conditional branch alone runs, one pass instead of two. A network trained with guidance as an
    input (`ModelConfig.guidance_input`) gives the guided output of any w >= 1 in one pass, at
    guidance_beta = 1 / w; w in (0, 1) still mixes two branches. `clip` clamps x0_hat to the data
    range, [-1, 1] or from the model's taught black (`ModelConfig.black`) to 1, and re-derives eps_hat
    from it, as DDPM's reference sampler does. `precision="bf16"` runs the network under bfloat16
    autocast and takes its output back to fp32 (see `PRECISIONS`), except at the steps with
    t / (T - 1) >= `fp32_from` (`SampleConfig.fp32_from`).

    Autoguidance (Karras et al. 2024): with a `guide` network, a weaker model of the same data (an
    earlier snapshot of the same run, or a smaller net), the base of the guided output is the
    guide's conditional output instead of the unconditional one: out = guide + w (cond - guide).
    It pushes away from what the weak model gets wrong rather than towards the class. `guide_weight`
    is its w (default: `guidance`); with `guide_below`, only the guided steps with t / (T - 1) below
    that share are autoguided and the others get classifier-free guidance at `guidance`.
    """

    def __init__(self, model: nn.Module, schedule: NoiseSchedule, labels: torch.Tensor | None = None,
                 guidance: float = 1.0, clip: bool = True, guidance_interval: GuidanceInterval = ALL_STEPS,
                 precision: str = "fp32", guide: nn.Module | None = None, guide_weight: float | None = None,
                 guide_below: float | None = None, fp32_from: float | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        config = getattr(model, "config", None)
        num_classes = getattr(config, "num_classes", 0)
        if labels is not None:
            check_labels(labels, num_classes)
        self.plan = Guidance(labels is not None, guidance, check_interval(guidance_interval),
                             getattr(config, "guidance_input", False), guide is not None, guide_weight, guide_below)
        self.model, self.schedule, self.labels, self.guidance, self.clip = model, schedule, labels, guidance, clip
        self.precision, self.guide, self.null_label, self.fp32_from = precision, guide, num_classes, fp32_from
        self.black = getattr(config, "black", -1.0)

    def _null_labels(self, like: torch.Tensor) -> torch.Tensor:
        """"No label" for each row of `like`: the null index, or its one-hot row for label weights."""
        if like.is_floating_point():
            return torch.nn.functional.one_hot(torch.full(like.shape[:1], self.null_label, device=like.device),
                                               self.null_label + 1).to(like.dtype)
        return torch.full_like(like, self.null_label)

    def _output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        branches = self.plan.branches(int(t[0]), self.schedule.num_timesteps)
        if branches == "unconditional":
            return self.model(x, t, torch.full_like(t, self.null_label) if self.null_label else None)
        if branches == "conditional":
            return self.model(x, t, self.labels)
        if branches == "learned":
            return self.model(x, t, self.labels, torch.full(t.shape, 1 / self.guidance, device=x.device))
        if branches == "autoguidance":
            base = self.guide(x, t, self.labels)  # type: ignore[misc]
            return base + self.plan.guide_weight_or_weight * (self.model(x, t, self.labels) - base)
        null = self._null_labels(self.labels)  # type: ignore[arg-type]
        both = self.model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.labels, null]))
        cond, uncond = both.chunk(2)
        return uncond + self.guidance * (cond - uncond)

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction:
        share = timestep_share(int(t[0]), self.schedule.num_timesteps)
        bf16 = self.precision == "bf16" and (self.fp32_from is None or share < self.fp32_from)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            output = self._output(x, t)
        x0, eps = self.schedule.to_x0_eps(x, t, output.float())
        if self.clip:
            x0 = x0.clamp(self.black, 1.0)
            eps = self.schedule.eps_from_x0(x, t, x0)
        return x0, eps


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """`ValueError` unless `labels` is a 1-D integer tensor of classes this model knows, or finite
    label weights shaped `(B, num_classes + 1)` (see `UNet.forward`)."""
    if num_classes == 0:
        raise ValueError("this model is unconditional; it cannot be asked for a class")
    if labels.is_floating_point():
        if labels.ndim != 2 or labels.shape[1] != num_classes + 1 or not torch.isfinite(labels).all():
            raise ValueError(f"label weights must be finite and shaped (B, {num_classes + 1}), "
                             f"got {tuple(labels.shape)}")
        return
    if labels.ndim != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D tensor of integers, got {labels.dtype} {tuple(labels.shape)}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        bad = int(labels.max()) if int(labels.max()) >= num_classes else int(labels.min())
        raise ValueError(f"class {bad} is not one of this model's {num_classes} classes (0-{num_classes - 1})")


def check_guide(guide: nn.Module, model: nn.Module) -> None:
    """`ValueError` unless `guide` draws the images and classes `model` does (autoguidance; the noise
    schedule and prediction type are the checkpoints', checked by `Pipeline.load_guide`)."""
    mine, theirs = model.config, guide.config  # type: ignore[attr-defined]
    for name in ("image_size", "in_channels", "num_classes"):
        if getattr(mine, name) != getattr(theirs, name):
            raise ValueError(f"the guide network's {name} is {getattr(theirs, name)}, "
                             f"the model's {getattr(mine, name)}")


def _check_request(config: Any, num: int, labels: torch.Tensor | None, noise: torch.Tensor | None) -> None:
    """`ValueError` naming the first of `generate`'s arguments that cannot be drawn."""
    if num < 1:
        raise ValueError(f"number of samples must be at least 1, got {num}")
    if labels is not None and len(labels) != num:
        raise ValueError(f"got {len(labels)} labels for {num} samples")
    if noise is not None and tuple(noise.shape) != (num, config.in_channels, config.image_size, config.image_size):
        raise ValueError(f"noise must be shaped like the {num} images, got {tuple(noise.shape)}")


def generate(model: nn.Module, schedule: NoiseSchedule, num: int, settings: SampleConfig | None = None, *,
             labels: torch.Tensor | None = None, generator: torch.Generator | None = None,
             device: torch.device | str = "cpu", callback: Callback = None, noise: torch.Tensor | None = None,
             clip: bool = True, spacing: str | None = None, guide: nn.Module | None = None,
             guide_weight: float | None = None, guide_below: float | None = None) -> torch.Tensor:
    """Generate `num` images `(num, C, S, S)` in [-1, 1] (from `ModelConfig.black` for a model taught exact
    black; `data.to_uint8` makes pixels of them) at the size the model was trained at, drawn as
    `settings` say (default: `SampleConfig()`, the product's defaults).

    `labels` `(num,)` asks for classes (conditional models); `None` samples unconditionally. Initial
    noise comes from `generator` (CPU by default) so the same seed gives the same images on any
    device, unless `noise` `(num, C, S, S)` gives it (interpolation does, to walk between two seeds'
    noise). All of it is drawn before the first step, so one seed starts every sampler from the same
    noise and a stochastic sampler's fresh noise (drawn from `generator` too) comes after it.
    `spacing` overrides the sampler's own (`DEFAULT_SPACING`). `guide` is autoguidance's weaker
    network (see `Denoiser`, with `guide_weight` and `guide_below`), of the same image size and classes.
    """
    settings = settings or SampleConfig()
    config = model.config  # type: ignore[attr-defined]
    _check_request(config, num, labels, noise)
    if guide is not None:
        check_guide(guide, model)
        guide = guide.to(device).eval()
    timesteps = timesteps_for(settings, schedule, spacing)
    precision = resolve_precision(settings.precision, device)
    sample_fn = SAMPLERS[settings.sampler]
    model = model.to(device).eval()
    network = compiled_network(model) if settings.compile else model
    if noise is None:
        noise = torch.randn((num, config.in_channels, config.image_size, config.image_size), generator=generator)
    outputs = []
    for start in range(0, num, settings.max_batch):
        if torch.device(device).type == "cpu":
            revisit_threads()  # "auto" threads follow the machine's load, batch by batch
        count = min(settings.max_batch, num - start)
        x = noise[start:start + count].to(device)
        batch_labels = labels[start:start + count].to(device) if labels is not None else None
        if settings.compile and count < min(settings.max_batch, num):  # a compiled shape, not a new one
            x, batch_labels = _padded(x, batch_labels, settings.max_batch)
        denoise = Denoiser(network, schedule, batch_labels, settings.guidance, clip, settings.guidance_interval,
                           precision, guide, guide_weight, guide_below, settings.fp32_from)
        outputs.append(sample_fn(denoise, x, timesteps, schedule, generator=generator, callback=callback,
                                 **settings.sampler_kwargs())[:count].cpu())
    return torch.cat(outputs)


def _padded(x: torch.Tensor, labels: torch.Tensor | None, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A last, smaller batch filled up to `size` rows (copies of its first), dropped after the walk."""
    def fill(rows: torch.Tensor) -> torch.Tensor:
        return torch.cat([rows, rows[:1].expand(size - len(rows), *rows.shape[1:])])

    return fill(x), fill(labels) if labels is not None else None
