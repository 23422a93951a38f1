"""The training loop: epsilon/v-prediction MSE, AdamW, EMA, checkpoints, exact resume, DDP.

Every random draw of step `s` comes from generators seeded by `(seed, s)`, and the data order of
epoch `e` from a permutation seeded by `(seed, e)`. A run resumed from the checkpoint of step `s`
therefore draws exactly what the uninterrupted run would have drawn, with no RNG state to carry
(the checkpoint stores weights, EMA, optimizer and counters).

When is resume bit-exact (same machine, thread count and device)? When the run's limit is in
steps or epochs and is the same on resume: the learning rate is then a function of the step
alone. With `--max-minutes` the cosine decay follows the elapsed wall-clock time (stored in each
checkpoint and counted across resumes), so the rate at a step depends on how fast the steps
before it ran: two runs, interrupted or not, are not bit-identical. A resume with a different
step limit stretches or shrinks the rest of the decay to the new limit.

The pieces: `ProcessGroup` (distributed.py) says which rank this is; `RunDirectory` (rundir.py)
owns the files; `TrainState` holds the model, its EMA, the optimizer and the counters; `Trainer`
draws batches and steps; `Trainer.run` is the loop.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpoint, CheckpointError
from .config import DiffusionConfig, ModelConfig, SampleConfig, TrainConfig, model_defaults, to_dict
from .data import load_mnist, to_model_space
from .devices import pick_device, resolve_precision
from .distill import Distiller, student_flags
from .distributed import join_process_group
from .files import stop_on_signals
from .rundir import RunDirectory, RunDirError, RunLock
from .schedule import NoiseSchedule
from .unet import UNet, count_parameters

Message = Callable[[str], None]


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what was kept."""


class EMA:
    """Exponential moving average of parameters: ema <- d ema + (1 - d) param.

    The decay is 0 (a plain copy) for the first `warmup_steps` updates, then
    d_n = min(decay, (1 + n) / (10 + n)) with n counted from the end of warm-up, so early
    averages do not remember the random initialisation for thousands of steps.
    """

    def __init__(self, model: nn.Module, decay: float, warmup_steps: int) -> None:
        self.decay, self.warmup_steps = decay, warmup_steps
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return 0.0
        n = step - self.warmup_steps
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = self.decay_at(step)
        for ema_p, p in zip(self.model.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)


def learning_rate(config: TrainConfig, step: int, decay_progress: float | None) -> float:
    """Linear warm-up to `lr` over `warmup_steps`, then a cosine decay to 0 as `decay_progress`
    (the share of the budget after warm-up used so far, in [0, 1]) goes from 0 to 1, so the rate
    is continuous at the end of warm-up. With no limit (`decay_progress` None) or
    `lr_decay="none"` the rate stays at `lr`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_decay == "none" or decay_progress is None:
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(decay_progress, 0.0), 1.0)))


def diffusion_loss(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor | None,
                   t: torch.Tensor, noise: torch.Tensor, min_snr_gamma: float = 0.0,
                   guidance_beta: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between the network output at (x_t, t) and its target (Ho et al. 2020, eq. 14), each
    sample weighted by min-SNR-gamma (Hang et al. 2023) when `min_snr_gamma > 0`.

    x0, noise: `(B, C, H, W)`; t: `(B,)` ints in [0, T); labels: `(B,)` or None.

    With `guidance_beta` `(B,)` in (0, 1] (networks with a guidance input), this is guidance-free
    training (Chen et al. 2025, eq. 9): the conditional prediction the loss sees is
    beta F(x_t, c, beta) + (1 - beta) sg[F(x_t, null, 1)], the unconditional one from a gradient-free
    pass. Solving for F gives uncond + (cond - uncond) / beta: F at beta is the guided prediction of
    weight w = 1 / beta. Rows with the null label should have beta = 1 (plain unconditional training).
    """
    x_t = schedule.q_sample(x0, t, noise)
    if guidance_beta is None:
        output = model(x_t, t, labels)
    else:
        network = getattr(model, "module", model)  # the gradient-free pass needs no DDP bookkeeping
        with torch.no_grad():
            null = torch.full_like(labels, network.config.num_classes)
            uncond = network(x_t, t, null, torch.ones_like(guidance_beta))
        beta = guidance_beta.view(-1, *[1] * (x0.ndim - 1))
        output = beta * model(x_t, t, labels, guidance_beta) + (1 - beta) * uncond
    error = (output.float() - schedule.training_target(x0, t, noise)).pow(2).flatten(1).mean(1)  # (B,)
    if min_snr_gamma > 0:
        error = schedule.min_snr_weight(t, min_snr_gamma) * error
    return error.mean()


def mixed_seed(seed: int, *parts: int) -> int:
    """A distinct, reproducible 63-bit seed for `(seed, *parts)`; no process-salted hashing."""
    value = seed
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return value


class TrainState:
    """The model, its EMA, the optimizer and the counters: everything a checkpoint restores."""

    def __init__(self, model_config: ModelConfig, config: TrainConfig, device: torch.device) -> None:
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        self.model = UNet(model_config).to(device)
        self.ema = EMA(self.model, config.ema_decay, config.ema_warmup_steps)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.step, self.images_seen = 0, 0
        self.elapsed_before_s = 0.0  # training time of the runs before this resume
        self.warmup_elapsed_s: float | None = None  # elapsed time when warm-up ended

    def restore_weights(self, weights: dict[str, torch.Tensor]) -> None:
        """Start from given weights (a distillation's teacher): the model and its EMA both."""
        self.model.load_state_dict(weights)
        self.ema.model.load_state_dict(weights)

    def restore(self, checkpoint: Checkpoint) -> None:
        """Load a checkpoint's weights, EMA, optimizer and counters; `CheckpointError` if they do not fit."""
        try:
            self.model.load_state_dict(checkpoint.model_state)
            self.ema.model.load_state_dict(checkpoint.ema_state or checkpoint.model_state)
            if checkpoint.optimizer_state is not None:
                _check_optimizer_fits(checkpoint.optimizer_state, self.model)
                self.optimizer.load_state_dict(checkpoint.optimizer_state)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"step {checkpoint.step} does not fit the model: {first_line}") from None
        self.step, self.images_seen = checkpoint.step, checkpoint.images_seen
        self.elapsed_before_s = float(checkpoint.extra.get("elapsed_s", 0.0))
        warmup_elapsed = checkpoint.extra.get("warmup_elapsed_s")
        # Checkpoints from before this field decayed from the start of the run.
        self.warmup_elapsed_s = float(warmup_elapsed) if warmup_elapsed is not None else 0.0

    def to_checkpoint(self, model_config: ModelConfig, diffusion_config: DiffusionConfig, config: TrainConfig,
                      elapsed_s: float) -> Checkpoint:
        extra: dict[str, Any] = {"elapsed_s": round(elapsed_s, 3)}
        if self.warmup_elapsed_s is not None:
            extra["warmup_elapsed_s"] = round(self.warmup_elapsed_s, 3)
        return Checkpoint(model_config=model_config, diffusion_config=diffusion_config,
                          model_state=self.model.state_dict(), ema_state=self.ema.model.state_dict(),
                          optimizer_state=self.optimizer.state_dict(), train_config=config,
                          step=self.step, images_seen=self.images_seen, extra=extra)


def _check_optimizer_fits(state: dict[str, Any], model: nn.Module) -> None:
    """`ValueError` unless every AdamW state tensor belongs to a parameter of `model` and has its
    shape (the optimizer itself would only fail at the first step, in the middle of the arithmetic)."""
    params = list(model.parameters())
    for index, tensors in state["state"].items():
        if not 0 <= index < len(params):
            raise ValueError(f"optimizer state for parameter {index}, but the model has {len(params)}")
        for key, value in tensors.items():
            expected = () if key == "step" else tuple(params[index].shape)
            if tuple(value.shape) != expected:
                raise ValueError(f"optimizer state '{key}' of parameter {index} has shape {list(value.shape)}, "
                                 f"expected {list(expected)}")


@dataclass
class TrainResult:
    step: int
    images_seen: int
    elapsed_s: float
    stopped_by_signal: int | None  # SIGINT or SIGTERM when asked to stop, else None
    checkpoint: Path

    @property
    def stopped_early(self) -> bool:
        return self.stopped_by_signal is not None


def _find_resume_point(run_dir: RunDirectory, model_config: ModelConfig, config: TrainConfig,
                       device: torch.device, warn: Message) -> tuple[TrainState, Checkpoint | None, TrainConfig]:
    """A fresh state, or the state of the newest checkpoint that loads and fits (older ones are
    tried in turn, each failure reported), with the train config the run goes on with. A directory
    whose checkpoints all fail is refused, so a run never silently restarts from step 0 beside them."""
    for checkpoint in run_dir.loadable_checkpoints(warn):
        merged = _merge_resume(checkpoint.train_config, config)
        state = TrainState(checkpoint.model_config, merged, device)
        try:
            state.restore(checkpoint)
        except CheckpointError as error:
            warn(f"skipping checkpoint {run_dir.checkpoint_path(checkpoint.step)}: {error}")
            continue
        return state, checkpoint, merged
    if existing := run_dir.checkpoints():
        raise CheckpointError(f"none of the {len(existing)} checkpoints in {run_dir.path / 'checkpoints'} loads; "
                            f"nothing was changed (move them away or choose a new --run-dir)")
    return TrainState(model_config, config, device), None, config


def _merge_resume(stored: TrainConfig | None, requested: TrainConfig) -> TrainConfig:
    """On resume keep the run's own recipe (so the result is the run it would have been); take
    from the request only when to stop and how often to log, save and sample."""
    if stored is None:
        return requested
    operational = ("epochs", "max_steps", "max_minutes", "checkpoint_every", "keep_checkpoints",
                   "sample_every", "log_every")
    return TrainConfig(**(to_dict(stored) | {name: getattr(requested, name) for name in operational}))


class Trainer:
    """One run: finds where to start (fresh or the newest good checkpoint), then `run()` trains to
    the stop condition. `images`/`labels` (uint8 `(N, 28, 28)`, int64 `(N,)`) default to MNIST's
    training set under `data_root`."""

    def __init__(self, run_dir: str | Path, model_config: ModelConfig, diffusion_config: DiffusionConfig,
                 train_config: TrainConfig, *, data_root: str | Path = "data", device: str | None = None,
                 images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 on_log: Callable[[dict[str, Any]], None] | None = None,
                 on_message: Message | None = None,
                 on_sample: Callable[[nn.Module, int], object] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.run_dir = RunDirectory(run_dir)
        RunLock.check_free(self.run_dir.path)  # "in use" before any other verdict on the directory
        self.run_dir.check_is_run()
        self.device = pick_device(device)
        self.group = join_process_group(self.device)
        self.on_message = on_message or (lambda message: None)
        self.clock = clock  # seconds; tests hand in a clock of their own
        self.on_log = on_log or (lambda row: None)
        # Every `sample_every` steps: `on_sample(ema_model, step)`, e.g. a grid of digits (the CLI's
        # `figures.training_grid`); training itself never samples.
        self.on_sample = on_sample or (lambda model, step: None)
        self.state, resumed, train_config = _find_resume_point(self.run_dir, model_config, train_config,
                                                               self.device, self.on_message)
        if resumed is not None:
            if (resumed.model_config, resumed.diffusion_config) != (model_config, diffusion_config):
                self.on_message("resuming with the model and diffusion configs stored in the checkpoint")
            model_config, diffusion_config = resumed.model_config, resumed.diffusion_config
        self.distiller = None
        if train_config.teacher is not None:
            self.distiller, model_config, diffusion_config, start = Distiller.for_run(
                train_config.teacher, resumed is not None, model_config, diffusion_config, self.device)
            if start is not None:  # a fresh student: the teacher's weights
                self.state = TrainState(model_config, train_config, self.device)
                self.state.restore_weights(start)
        self.resumed_from = resumed.step if resumed is not None else None
        self.model_config, self.diffusion_config, self.config = model_config, diffusion_config, train_config
        if train_config.batch_size % self.group.world_size:
            raise ValueError(f"batch size {train_config.batch_size} must divide evenly over "
                             f"{self.group.world_size} processes")
        if images is None:
            images, labels = load_mnist(data_root, "train")
        assert labels is not None
        if len(images) < train_config.batch_size:
            raise ValueError(f"batch size {train_config.batch_size} exceeds the {len(images)} training images")
        self.images, self.labels = images, labels
        self.schedule = NoiseSchedule(diffusion_config)
        self.precision = resolve_precision(train_config.precision, self.device)
        self.lr = train_config.lr
        self._order_epoch, self._order = -1, torch.empty(0, dtype=torch.long)
        self.ddp_model: nn.Module = self.model
        if self.group.world_size > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    @property
    def model(self) -> UNet:
        return self.state.model

    @property
    def sample_settings(self) -> SampleConfig:
        """How this run's model is drawn: the product's defaults, or a distilled student's own walk."""
        return model_defaults(self.model_config)

    @property
    def step(self) -> int:
        return self.state.step

    # -- data and limits --------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return len(self.images) // self.config.batch_size

    def batch_indices(self, step: int) -> torch.Tensor:
        """The global batch of `step`: a slice of epoch `e`'s permutation, seeded by (seed, e)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._order_epoch != epoch:
            generator = torch.Generator().manual_seed(mixed_seed(self.config.seed, epoch))
            self._order = torch.randperm(len(self.images), generator=generator)
            self._order_epoch = epoch
        return self._order[position * self.config.batch_size:(position + 1) * self.config.batch_size]

    def total_steps(self) -> int | None:
        limits = []
        if self.config.max_steps is not None:
            limits.append(self.config.max_steps)
        if self.config.epochs is not None:
            limits.append(max(1, math.ceil(self.config.epochs * self.steps_per_epoch)))
        return min(limits) if limits else None

    def decay_progress(self, elapsed_s: float) -> float | None:
        """The share of the budget after warm-up used so far (the nearest of the step and time
        limits), in [0, 1]; None when the run has no limit."""
        shares = []
        warmup = self.config.warmup_steps
        if (total := self.total_steps()) is not None:
            shares.append((self.step - warmup) / max(total - warmup, 1))
        if self.config.max_minutes is not None:
            start = self.state.warmup_elapsed_s or 0.0
            shares.append((elapsed_s - start) / max(self.config.max_minutes * 60 - start, 1e-9))
        return min(1.0, max(0.0, max(shares))) if shares else None

    # -- one step ---------------------------------------------------------------------------
    def train_step(self, decay_progress: float | None = None) -> float:
        """One optimizer step at the learning rate `decay_progress` gives (see `decay_progress`).

        Random draws are made for the whole global batch from a generator seeded by (seed, step),
        and each rank takes its slice, so N processes compute what one process would on the same batch.
        """
        step, config, group = self.step, self.config, self.group
        generator = torch.Generator().manual_seed(mixed_seed(config.seed, step, 0))
        torch.manual_seed(mixed_seed(config.seed, step, 1 + group.rank))  # dropout draws
        index = self.batch_indices(step)  # (B,)
        if config.timestep_sampling == "lognormal":
            t = self.schedule.lognormal_timesteps(len(index), config.lognormal_mean, config.lognormal_std, generator)
        else:
            t = torch.randint(0, self.schedule.num_timesteps, (len(index),), generator=generator)
        noise = torch.randn((len(index), self.model_config.in_channels, self.model_config.image_size,
                             self.model_config.image_size), generator=generator)
        drop = torch.rand(len(index), generator=generator) < config.p_uncond
        # Guidance-free training: beta = 1 / w ~ U(0, 1], and 1 where the label is dropped.
        beta = (1 - torch.rand(len(index), generator=generator)) if self.model_config.guidance_input else None
        rank_share = slice(group.rank * len(index) // group.world_size,
                           (group.rank + 1) * len(index) // group.world_size)
        if self.distiller is not None:  # which leg of the student's walk each row learns
            t = torch.randint(0, self.distiller.num_legs, (len(index),), generator=generator)
        index, t, noise, drop = index[rank_share], t[rank_share], noise[rank_share], drop[rank_share]
        if beta is not None:
            beta = beta[rank_share].masked_fill(drop, 1.0).to(self.device)
        x0 = to_model_space(self.images[index], self.model_config.image_size, self.model_config.black).to(self.device)
        labels = None
        if self.model_config.conditional:
            labels = self.labels[index].clone()
            labels[drop] = self.model_config.num_classes  # the null label (Ho & Salimans 2022)
            labels = labels.to(self.device)
        self.lr = learning_rate(config, step, decay_progress)
        for param_group in self.state.optimizer.param_groups:
            param_group["lr"] = self.lr
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            loss = self._loss(x0, labels, t.to(self.device), noise.to(self.device), beta)
        self.state.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients of all ranks here
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip or math.inf)
        # The all-reduced gradient norm is the same on every rank, so all ranks stop together.
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            raise TrainingError(f"loss became {loss.item():.4g} (gradient norm {grad_norm.item():.4g}) at step "
                                f"{step}; stopped, {self._kept_checkpoint()} (try a lower --lr)")
        self.state.optimizer.step()
        self.state.ema.update(self.model, step)
        self.state.step += 1
        self.state.images_seen += config.batch_size
        return loss.item()

    def _loss(self, x0: torch.Tensor, labels: torch.Tensor | None, t: torch.Tensor, noise: torch.Tensor,
              beta: torch.Tensor | None) -> torch.Tensor:
        """The batch's loss: a distillation's (t: each row's leg), or the diffusion MSE (t: timesteps)."""
        if self.distiller is not None:
            return self.distiller.loss(self.ddp_model, x0, labels, t, noise)
        return diffusion_loss(self.ddp_model, self.schedule, x0, labels, t, noise, self.config.min_snr_gamma, beta)

    def _kept_checkpoint(self) -> str:
        saved = self.run_dir.checkpoints()
        return f"the checkpoint of step {saved[-1][0]} is kept" if saved else "no checkpoint had been written yet"

    # -- files ------------------------------------------------------------------------------
    def make_checkpoint(self, elapsed_s: float) -> Checkpoint:
        return self.state.to_checkpoint(self.model_config, self.diffusion_config, self.config, elapsed_s)

    def save(self, elapsed_s: float) -> Path:
        return self.run_dir.save(self.make_checkpoint(elapsed_s), self.config.keep_checkpoints)

    def _prepare_run_dir(self) -> None:
        try:
            self.run_dir.remove_stale_temporaries()
            self.run_dir.write_config(to_dict(self.model_config), to_dict(self.diffusion_config), to_dict(self.config))
            self.run_dir.truncate_metrics(self.resumed_from or 0)
        except OSError as error:
            raise RunDirError(f"cannot write to run directory {self.run_dir.path}: "
                              f"{error.strerror or error}") from None

    def describe(self) -> str:
        processes = f"{self.group.world_size} process{'es' if self.group.world_size > 1 else ''}"
        start = f"resuming from step {self.resumed_from}" if self.resumed_from is not None else "from scratch"
        if self.distiller is not None:
            start = (f"{'starting as the teacher' if self.resumed_from is None else start}: distilling the walk of "
                     f"{self.config.teacher} into {self.model_config.student_steps} passes per digit (drawn with "
                     f"{student_flags(self.model_config)} unless told otherwise)")
        return (f"training {count_parameters(self.model) / 1e6:.2f}M-parameter UNet on {self.device} "
                f"({processes}, {self.precision}) in {self.run_dir.path}, {start}")

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train until a limit is reached or SIGINT/SIGTERM arrives; always end with a checkpoint."""
        main = self.group.is_main
        if main:
            try:
                self.run_dir.path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise RunDirError(f"cannot create run directory {self.run_dir.path}: {error.strerror}") from None
        start = self.clock()
        total, budget_s = self.total_steps(), (self.config.max_minutes or math.inf) * 60

        def elapsed() -> float:
            return self.state.elapsed_before_s + self.clock() - start

        with (RunLock(self.run_dir.path) if main else nullcontext()), \
                (self.run_dir.held() if main else nullcontext()), stop_on_signals() as stop:
            if main:
                self._prepare_run_dir()
                self.on_message(self.describe())
            window = _LossWindow(self, self.run_dir if main else None)
            self.model.train()
            while True:
                # Every rank uses the same clock reading (the slowest rank's), so all ranks stop on
                # the same step and set the same learning rate.
                now = self.group.max_over_ranks(elapsed())
                if (total is not None and self.step >= total) or now >= budget_s:
                    break
                window.add(self.train_step(self.decay_progress(now)))
                if self.step == self.config.warmup_steps:
                    self.state.warmup_elapsed_s = self.group.max_over_ranks(elapsed())
                if main and self.step % self.config.log_every == 0:
                    window.flush(elapsed())
                if main and self.step % self.config.checkpoint_every == 0:
                    self.save(elapsed())
                if main and self.step % self.config.sample_every == 0:
                    self.on_sample(self.state.ema.model, self.step)
                if self.group.any_rank(stop.signal is not None):
                    break
            end_s = elapsed()
            if main:  # always, even at a step just saved: the final checkpoint carries the final clock
                window.flush(end_s)
                self.save(end_s)
        final = self.run_dir.checkpoint_path(self.step)
        return TrainResult(self.step, self.state.images_seen, end_s, stop.signal, final)


class _LossWindow:
    """Losses since the last log line; `flush` writes their mean as one row of metrics.jsonl."""

    def __init__(self, trainer: Trainer, run_dir: RunDirectory | None) -> None:
        self.trainer, self.run_dir = trainer, run_dir
        self.losses: list[float] = []
        self.started = trainer.clock()

    def add(self, loss: float) -> None:
        self.losses.append(loss)

    def flush(self, elapsed_s: float) -> None:
        if not self.losses or self.run_dir is None:
            return
        trainer = self.trainer
        now = trainer.clock()
        images = len(self.losses) * trainer.config.batch_size
        row = {"step": trainer.step, "epoch": round(trainer.step / trainer.steps_per_epoch, 4),
               "loss": sum(self.losses) / len(self.losses), "lr": trainer.lr,
               "images_per_s": round(images / max(now - self.started, 1e-9), 2), "elapsed_s": round(elapsed_s, 2)}
        self.run_dir.append_metrics(row)
        trainer.on_log(row)
        self.losses, self.started = [], now


def train(run_dir: str | Path, model_config: ModelConfig, diffusion_config: DiffusionConfig,
          train_config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Train (or resume) the run in `run_dir`; see `Trainer` for the keyword arguments."""
    return Trainer(run_dir, model_config, diffusion_config, train_config, **kwargs).run()
