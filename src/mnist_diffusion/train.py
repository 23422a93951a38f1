"""The training loop: epsilon/v-prediction MSE, AdamW, EMA, checkpoints, exact resume, DDP.

Every random draw of step `s` comes from generators seeded by `(seed, s, rank)`, and the data
order of epoch `e` from a permutation seeded by `(seed, e)`. A run resumed from the checkpoint of
step `s` therefore draws exactly what the uninterrupted run would have drawn, with no RNG state
to carry (the checkpoint stores weights, EMA, optimizer and counters).

Run directory layout:
    config.json                     the three configs, for people to read
    metrics.jsonl                   one JSON line per `log_every` steps
    checkpoints/step_XXXXXXXX.safetensors   the last `keep_checkpoints` checkpoints
    samples/step_XXXXXXXX.png       EMA samples, one row per digit, every `sample_every` steps
    train.lock                      the pid of the training that owns the directory
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import Checkpoint, CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .config import DiffusionConfig, ModelConfig, TrainConfig, to_dict
from .data import NUM_CLASSES, load_mnist, to_model_space, to_uint8
from .schedule import NoiseSchedule
from .unet import UNet

CHECKPOINT_DIR = "checkpoints"
SAMPLE_DIR = "samples"
LOCK_FILE = "train.lock"


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what was kept."""


def pick_device(requested: str | None = None) -> torch.device:
    """CUDA when present, else CPU; `requested` ('cpu', 'cuda', 'cuda:1', ...) overrides."""
    if requested in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise ValueError(f"unknown device {requested!r}; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    return device


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


def learning_rate(config: TrainConfig, step: int, progress: float | None) -> float:
    """Linear warm-up to `lr` over `warmup_steps`, then a cosine decay to 0 as `progress` (the share
    of the run's limit used so far, in [0, 1]) goes from 0 to 1. With no limit (`progress` None) or
    `lr_decay="none"` the rate stays at `lr`."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_decay == "none" or progress is None:
        return config.lr
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def diffusion_loss(model: nn.Module, schedule: NoiseSchedule, x0: torch.Tensor, labels: torch.Tensor | None,
                   t: torch.Tensor, noise: torch.Tensor, min_snr_gamma: float = 0.0) -> torch.Tensor:
    """MSE between the network output at (x_t, t) and its target (Ho et al. 2020, eq. 14), each
    sample weighted by min-SNR-gamma (Hang et al. 2023) when `min_snr_gamma > 0`.

    x0, noise: `(B, C, H, W)`; t: `(B,)` ints in [0, T); labels: `(B,)` or None.
    """
    x_t = schedule.q_sample(x0, t, noise)
    error = (model(x_t, t, labels) - schedule.training_target(x0, t, noise)).pow(2).flatten(1).mean(1)  # (B,)
    if min_snr_gamma > 0:
        error = schedule.min_snr_weight(t, min_snr_gamma) * error
    return error.mean()


@dataclass
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    # Where the tensors of collectives live: NCCL takes only CUDA tensors.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); gloo on CPU, NCCL on CUDA."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(dist.get_rank(), dist.get_world_size(), device)


class _Lock:
    """A pid file that refuses a second live training in the same run directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> _Lock:
        if self.path.exists():
            try:
                pid = int(self.path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise TrainingError(f"{self.path.parent} is in use by training process {pid}; "
                                    f"wait for it or stop it first")
        try:
            atomic_write(self.path, lambda tmp: tmp.write_text(str(os.getpid())))
        except OSError as error:
            raise TrainingError(f"cannot write to run directory {self.path.parent}: {error.strerror}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _stop_on_signals() -> Iterator[dict[str, bool]]:
    """Turn SIGINT/SIGTERM into a flag so the loop can save a checkpoint and return."""
    flag = {"stop": False}
    previous = {}

    def handler(signum: int, frame: Any) -> None:
        flag["stop"] = True

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def checkpoint_paths(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    return sorted((run_dir / CHECKPOINT_DIR).glob("step_*.safetensors"))


def latest_checkpoint(run_dir: Path, warn: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that loads; broken ones are reported through `warn` and skipped."""
    for path in reversed(checkpoint_paths(run_dir)):
        try:
            return load_checkpoint(path)
        except CheckpointError as error:
            if warn:
                warn(f"skipping unreadable checkpoint: {error}")
    return None


@dataclass
class TrainResult:
    step: int
    images_seen: int
    elapsed_s: float
    stopped_early: bool
    checkpoint: Path | None


class Trainer:
    """Owns the model, EMA, optimizer and counters of one run; `run()` trains to the stop condition."""

    def __init__(self, run_dir: str | Path, model_config: ModelConfig, diffusion_config: DiffusionConfig,
                 train_config: TrainConfig, *, data_root: str | Path = "data", device: str | None = None,
                 images: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 on_log: Callable[[dict[str, Any]], None] | None = None,
                 on_message: Callable[[str], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.device = pick_device(device)
        self.ctx = _init_distributed(self.device)
        if self.ctx.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.say = on_message or (lambda message: None)
        self.on_log = on_log or (lambda row: None)
        resumed = latest_checkpoint(self.run_dir, warn=self.say) if self.run_dir.exists() else None
        if resumed is not None:
            if (resumed.model_config, resumed.diffusion_config) != (model_config, diffusion_config):
                self.say("resuming with the model and diffusion configs stored in the checkpoint")
            model_config, diffusion_config = resumed.model_config, resumed.diffusion_config
            train_config = _merge_resume(resumed.train_config, train_config)
        self.model_config, self.diffusion_config, self.config = model_config, diffusion_config, train_config
        if train_config.batch_size % self.ctx.world_size:
            raise ValueError(f"batch size {train_config.batch_size} must divide evenly over "
                             f"{self.ctx.world_size} processes")
        if images is None:
            images, labels = load_mnist(data_root, "train")
        assert labels is not None
        self.images, self.labels = images, labels
        if len(images) < train_config.batch_size:
            raise ValueError(f"batch size {train_config.batch_size} exceeds the {len(images)} training images")
        self.schedule = NoiseSchedule(diffusion_config)
        torch.manual_seed(train_config.seed)  # identical initial weights on every rank
        self.model = UNet(model_config).to(self.device)
        self.ema = EMA(self.model, train_config.ema_decay, train_config.ema_warmup_steps)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=train_config.lr,
                                           weight_decay=train_config.weight_decay)
        self.step, self.images_seen, self.elapsed_before = 0, 0, 0.0
        self.lr = train_config.lr
        if resumed is not None:
            self.model.load_state_dict(resumed.model_state)
            self.ema.model.load_state_dict(resumed.ema_state or resumed.model_state)
            if resumed.optimizer_state is not None:
                self.optimizer.load_state_dict(resumed.optimizer_state)
            self.step, self.images_seen = resumed.step, resumed.images_seen
            self.elapsed_before = float(resumed.extra.get("elapsed_s", 0.0))
            self.say(f"resuming {self.run_dir} from step {self.step}")
        self.resumed_from = resumed.step if resumed is not None else None
        self._order_epoch, self._order = -1, torch.empty(0, dtype=torch.long)
        self.ddp_model: nn.Module = self.model
        if self.ctx.world_size > 1:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    # -- data -------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return len(self.images) // self.config.batch_size

    def batch_indices(self, step: int) -> torch.Tensor:
        """The global batch of `step`: a slice of epoch `e`'s permutation, seeded by (seed, e)."""
        epoch, position = divmod(step, self.steps_per_epoch)
        if self._order_epoch != epoch:
            seed = self.config.seed * 1_000_003 + epoch
            self._order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(seed))
            self._order_epoch = epoch
        return self._order[position * self.config.batch_size:(position + 1) * self.config.batch_size]

    def total_steps(self) -> int | None:
        limits = []
        if self.config.max_steps is not None:
            limits.append(self.config.max_steps)
        if self.config.epochs is not None:
            limits.append(max(1, math.ceil(self.config.epochs * self.steps_per_epoch)))
        return min(limits) if limits else None

    # -- one step ---------------------------------------------------------------------------
    def progress(self, elapsed_s: float) -> float | None:
        """The share of the run's limit used so far (the nearest of steps and minutes), or None."""
        shares = []
        if (total := self.total_steps()) is not None:
            shares.append(self.step / total)
        if self.config.max_minutes is not None:
            shares.append(elapsed_s / (self.config.max_minutes * 60))
        return min(1.0, max(shares)) if shares else None

    def train_step(self, progress: float | None = None) -> float:
        """One optimizer step; `progress` (see `progress`) sets the learning rate.

        Random draws are made for the whole global batch from a generator seeded by (seed, step),
        and each rank takes its slice, so N processes compute what one process would on the same batch.
        """
        step, config = self.step, self.config
        generator = torch.Generator().manual_seed(_step_seed(config.seed, step, stream=0))
        torch.manual_seed(_step_seed(config.seed, step, stream=1 + self.ctx.rank))  # dropout draws
        index = self.batch_indices(step)  # (B,)
        t = torch.randint(0, self.schedule.num_timesteps, (len(index),), generator=generator)
        noise = torch.randn((len(index), self.model_config.in_channels, self.model_config.image_size,
                             self.model_config.image_size), generator=generator)
        drop = torch.rand(len(index), generator=generator) < config.p_uncond
        mine = slice(self.ctx.rank * len(index) // self.ctx.world_size,
                     (self.ctx.rank + 1) * len(index) // self.ctx.world_size)
        index, t, noise, drop = index[mine], t[mine].to(self.device), noise[mine].to(self.device), drop[mine]
        x0 = to_model_space(self.images[index], self.model_config.image_size).to(self.device)
        labels = None
        if self.model_config.conditional:
            labels = self.labels[index].clone()
            labels[drop] = self.model_config.num_classes  # the null label (Ho & Salimans 2022)
            labels = labels.to(self.device)
        self.lr = learning_rate(config, step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        loss = diffusion_loss(self.ddp_model, self.schedule, x0, labels, t, noise, config.min_snr_gamma)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients of all ranks here
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip or math.inf)
        # The all-reduced gradient norm is the same on every rank, so all ranks stop together.
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            raise TrainingError(f"loss became {loss.item():.4g} (gradient norm {grad_norm.item():.4g}) at step "
                                f"{step}; stopped, the last good checkpoint is kept (try a lower --lr)")
        self.optimizer.step()
        self.ema.update(self.model, step)
        self.step += 1
        self.images_seen += config.batch_size
        return loss.item()

    # -- persistence ------------------------------------------------------------------------
    def make_checkpoint(self, elapsed_s: float) -> Checkpoint:
        return Checkpoint(
            model_config=self.model_config, diffusion_config=self.diffusion_config,
            model_state=self.model.state_dict(), ema_state=self.ema.model.state_dict(),
            optimizer_state=self.optimizer.state_dict(), train_config=self.config,
            step=self.step, images_seen=self.images_seen, extra={"elapsed_s": round(elapsed_s, 3)},
        )

    def save(self, elapsed_s: float) -> Path:
        path = self.run_dir / CHECKPOINT_DIR / f"step_{self.step:08d}.safetensors"
        try:
            save_checkpoint(self.make_checkpoint(elapsed_s), path)
        except OSError as error:
            raise TrainingError(f"could not write checkpoint {path}: {error.strerror or error}; "
                                f"the previous checkpoint is kept") from None
        for old in checkpoint_paths(self.run_dir)[:-self.config.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def save_samples(self) -> Path | None:
        """A 10x10 grid from the EMA weights, one row per digit when conditional (fixed seed)."""
        from .figures import save_grid  # local imports: only needed every `sample_every` steps
        from .sampling import DEFAULT_GUIDANCE, generate

        conditional = self.model_config.conditional
        labels = torch.arange(NUM_CLASSES).repeat_interleave(10) if conditional else None
        guidance = DEFAULT_GUIDANCE if conditional else 1.0
        images = generate(self.ema.model, self.schedule, 100, labels=labels, guidance=guidance,
                          generator=torch.Generator().manual_seed(0), device=self.device)
        try:
            return save_grid(to_uint8(images), self.run_dir / SAMPLE_DIR / f"step_{self.step:08d}.png", nrow=10)
        except OSError as error:
            self.say(f"could not write sample grid: {error}")
            return None

    def _prepare_run_dir(self) -> None:
        try:
            for stale in (self.run_dir / CHECKPOINT_DIR).glob(".*.tmp"):  # left by a killed write
                stale.unlink(missing_ok=True)
            configs = {"model": to_dict(self.model_config), "diffusion": to_dict(self.diffusion_config),
                       "train": to_dict(self.config)}
            atomic_write(self.run_dir / "config.json", lambda tmp: tmp.write_text(json.dumps(configs, indent=2)))
            metrics = self.run_dir / "metrics.jsonl"
            if self.resumed_from is not None and metrics.exists():
                # Drop lines logged after the checkpoint we resume from, so the curve continues cleanly.
                kept = [line for line in metrics.read_text().splitlines()
                        if _logged_step(line) is not None and _logged_step(line) <= self.resumed_from]
                atomic_write(metrics, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))
        except OSError as error:
            raise TrainingError(f"cannot write to run directory {self.run_dir}: {error.strerror or error}") from None

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> TrainResult:
        main = self.ctx.is_main
        if main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise TrainingError(f"cannot create run directory {self.run_dir}: {error.strerror}") from None
        lock = _Lock(self.run_dir / LOCK_FILE) if main else None
        start = time.monotonic()
        total = self.total_steps()
        budget_s = self.config.max_minutes * 60 if self.config.max_minutes is not None else math.inf
        losses: list[float] = []
        window_start = time.monotonic()
        last_saved: Path | None = None
        stopped_early = False

        def log(elapsed: float) -> None:
            nonlocal losses, window_start
            now = time.monotonic()
            row = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
                   "loss": sum(losses) / len(losses), "lr": self.lr,
                   "images_per_s": round(len(losses) * self.config.batch_size / max(now - window_start, 1e-9), 2),
                   "elapsed_s": round(elapsed, 2)}
            self._append_metrics(row)
            self.on_log(row)
            losses, window_start = [], now

        with (lock or _null()), _stop_on_signals() as signals:
            if main:
                self._prepare_run_dir()
            self.model.train()
            while True:
                # Every rank uses the same clock reading (the slowest rank's), so all ranks stop on
                # the same step and set the same learning rate.
                elapsed = _agreed_max(self.elapsed_before + time.monotonic() - start, self.ctx)
                if (total is not None and self.step >= total) or elapsed >= budget_s:
                    break
                losses.append(self.train_step(self.progress(elapsed)))
                elapsed = self.elapsed_before + time.monotonic() - start
                if main and self.step % self.config.log_every == 0:
                    log(elapsed)
                if main and self.step % self.config.checkpoint_every == 0:
                    last_saved = self.save(elapsed)
                if main and self.step % self.config.sample_every == 0:
                    self.save_samples()
                if _agree(signals["stop"], self.ctx):
                    stopped_early = True
                    break
            elapsed = self.elapsed_before + time.monotonic() - start
            if main and losses:
                log(elapsed)
            if main and (last_saved is None or not last_saved.name.endswith(f"{self.step:08d}.safetensors")):
                last_saved = self.save(elapsed)
        return TrainResult(self.step, self.images_seen, elapsed, stopped_early, last_saved)

    def _append_metrics(self, row: dict[str, Any]) -> None:
        try:
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(row) + "\n")
        except OSError as error:
            raise TrainingError(f"cannot append to {self.run_dir / 'metrics.jsonl'}: {error.strerror}") from None


def _step_seed(seed: int, step: int, stream: int) -> int:
    """A distinct, reproducible seed per (seed, step, stream); no process-salted hashing."""
    return ((seed * 1_000_003 + step) * 4099 + stream) % (2**63 - 1)


def _logged_step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def _agreed_max(value: float, ctx: DistributedContext) -> float:
    """The largest of every rank's `value` (the value itself in a single process)."""
    if ctx.world_size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def _agree(flag: bool, ctx: DistributedContext) -> bool:
    """Every rank stops if any rank was told to stop."""
    return _agreed_max(1.0 if flag else 0.0, ctx) > 0


@contextmanager
def _null() -> Iterator[None]:
    yield None


def _merge_resume(stored: TrainConfig | None, requested: TrainConfig) -> TrainConfig:
    """On resume keep the run's own recipe (so the result is the run it would have been); take
    from the request only when to stop and how often to log, save and sample."""
    if stored is None:
        return requested
    operational = ("epochs", "max_steps", "max_minutes", "checkpoint_every", "keep_checkpoints",
                   "sample_every", "log_every")
    return dataclasses.replace(stored, **{name: getattr(requested, name) for name in operational})


def train(run_dir: str | Path, model_config: ModelConfig, diffusion_config: DiffusionConfig,
          train_config: TrainConfig, **kwargs: Any) -> TrainResult:
    """Train (or resume) the run in `run_dir`; see `Trainer` for the keyword arguments."""
    return Trainer(run_dir, model_config, diffusion_config, train_config, **kwargs).run()
