"""The model side of `mnist-diffusion serve`: the requests the page sends, checked field by field,
and the jobs that answer them as streams of frames (one per sampler step), each on its own view of
the one shared network, cancelled within one network pass when nobody is waiting for it.

`Demo` knows nothing of HTTP; `serve.py` carries its streams over the wire.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .completion import COMPLETION_METHODS, DEFAULT_METHOD, REPAINT_STEPS
from .config import FEW_STEPS, MAX_GUIDANCE, SAMPLER_NAMES, SampleConfig, model_defaults
from .data import DataError, load_mnist, to_uint8
from .interpolation import DETERMINISTIC_SAMPLERS
from .pipeline import Pipeline
from .sampling import last_timestep_for
from .schedule import NoiseSchedule

MAX_STEPS = 100  # per request; full-T DDPM (1000 steps) belongs on the command line
MAX_FRAMES = 16
MAX_PACE_MS = 2000
DEFAULT_PACE_MS = 60  # at least this long between streamed frames, so a person can follow
MAX_SEED = 2**53 - 1  # the largest integer JavaScript's numbers hold exactly
POLL_S = 0.25  # how often a waiting stream checks that its client is still there


class RequestError(ValueError):
    """A request the server refuses with HTTP 400; the message is shown on the page."""


class Cancelled(Exception):
    """The client of a job has gone; the job stops at its next network pass."""


@dataclass
class Job:
    """One request's link to its connection: `cancelled` stops the work at the next network pass,
    `client_gone()` tells a waiting connection that nobody will read the answer, and `on_finish` runs
    when the worker ends (it frees the server's job slot)."""

    client_gone: Callable[[], bool] = lambda: False
    on_finish: Callable[[], None] = lambda: None
    cancelled: threading.Event = field(default_factory=threading.Event)


class _SerializedModel(nn.Module):
    """The shared network for one job: one forward pass at a time across all jobs (requests in other
    threads wait per step), and none once the job is cancelled."""

    def __init__(self, model: nn.Module, lock: threading.Lock, cancelled: threading.Event) -> None:
        super().__init__()
        self.inner, self.lock, self.cancelled, self.config = model, lock, cancelled, model.config

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # the network's own signature
        if self.cancelled.is_set():
            raise Cancelled
        with self.lock:
            return self.inner(*args, **kwargs)


# -- request fields: each names the field and what is allowed -----------------------------------

def integer_field(body: dict, name: str, low: int, high: int, default: int | None = None) -> int:
    """`body[name]`, a whole number in [low, high] (or `default` when absent); `RequestError` otherwise."""
    value = body.get(name, default)
    if type(value) is not int or not low <= value <= high:
        raise RequestError(f"{name} must be a whole number from {low} to {high}, got {json.dumps(value)}")
    return value


def _number(body: dict, name: str, low: float, high: float, default: float) -> float:
    value = body.get(name, default)
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        raise RequestError(f"{name} must be a number from {low:g} to {high:g}, got {json.dumps(value)}")
    return float(value)


def _choice(body: dict, name: str, choices: tuple[str, ...], default: str) -> str:
    value = body.get(name, default)
    if value not in choices:
        raise RequestError(f"{name} must be one of {', '.join(choices)}, got {json.dumps(value)}")
    return value


def _pixel_list(body: dict, name: str, high: int) -> torch.Tensor:
    value = body.get(name)
    if (not isinstance(value, list) or len(value) != 784
            or not all(type(v) is int and 0 <= v <= high for v in value)):
        raise RequestError(f"{name} must be a list of 784 whole numbers from 0 to {high} (a 28x28 image, row by row)")
    return torch.tensor(value, dtype=torch.uint8).reshape(28, 28)


@dataclass
class Demo:
    """The model and what the page needs to know about it."""

    model: nn.Module
    schedule: NoiseSchedule
    test_images: torch.Tensor | None
    test_labels: torch.Tensor | None
    checkpoint: Checkpoint
    lock: threading.Lock = field(default_factory=threading.Lock)  # one forward pass at a time
    # The workers running now, each with its job's cancellation: `stop_all` ends them on shutdown.
    workers: dict[threading.Thread, threading.Event] = field(default_factory=dict)

    @classmethod
    def load(cls, checkpoint_path: str | None, data_root: str | Path) -> Demo:
        checkpoint = load_checkpoint(checkpoint_path)
        model = checkpoint.build_model()
        try:
            test_images, test_labels = load_mnist(data_root, "test", download=False)
        except (DataError, OSError):
            test_images, test_labels = None, None
        return cls(model, NoiseSchedule(checkpoint.diffusion_config), test_images, test_labels, checkpoint)

    @property
    def num_classes(self) -> int:
        return self.checkpoint.model_config.num_classes

    @property
    def defaults(self) -> SampleConfig:
        """The model's own settings: the product's defaults, or a distilled student's walk."""
        return model_defaults(self.checkpoint.model_config)

    def info(self) -> dict[str, Any]:
        defaults = self.defaults
        return {"num_classes": self.num_classes, "class_names": list(self._pipeline(self.model).class_names),
                "samplers": list(SAMPLER_NAMES),
                "interpolation_samplers": list(DETERMINISTIC_SAMPLERS), "completion_methods": list(COMPLETION_METHODS),
                "defaults": {"sampler": defaults.sampler, "steps": defaults.steps or FEW_STEPS,
                             "guidance": defaults.guidance, "method": DEFAULT_METHOD, "pace_ms": DEFAULT_PACE_MS},
                "limits": {"steps": min(MAX_STEPS, self.schedule.num_timesteps - self.last_step),
                           "guidance": MAX_GUIDANCE, "frames": MAX_FRAMES, "seed": MAX_SEED},
                "test_digits": self.test_images is not None}

    def _digit(self, body: dict, required: bool) -> int | None:
        if body.get("digit") is None and not required:
            return None
        if self.num_classes == 0:
            raise RequestError("this model is unconditional: it cannot be asked for a digit")
        return integer_field(body, "digit", 0, self.num_classes - 1)

    @property
    def last_step(self) -> int:
        """Where a generated digit's walk ends on this model's schedule (`SampleConfig.last_timestep`)."""
        return last_timestep_for(self.defaults.last_timestep, self.schedule.num_timesteps)

    def _pipeline(self, model: nn.Module) -> Pipeline:
        """`Pipeline` on `model` (a job's view of the network): the page draws, completes and
        interpolates with the very calls `sample`, `complete` and `interpolate` make."""
        return Pipeline(self.checkpoint, model, self.schedule, next(self.model.parameters()).device, self.defaults)

    def _steps(self, body: dict, default: int, room: int | None = None) -> int:
        return integer_field(body, "steps", 1, min(MAX_STEPS, room or self.schedule.num_timesteps), default)

    # -- the three streams ------------------------------------------------------------------------
    def generate(self, body: dict, job: Job) -> Iterator[dict]:
        digit = self._digit(body, required=False)
        guidance = _number(body, "guidance", 0.0, MAX_GUIDANCE, self.defaults.guidance)
        sampler = _choice(body, "sampler", SAMPLER_NAMES, self.defaults.sampler)
        room = self.schedule.num_timesteps - self.last_step
        steps, seed = self._steps(body, min(FEW_STEPS, room), room), integer_field(body, "seed", 0, MAX_SEED, 0)
        # Without a digit the page draws unconditionally (guidance 0: the null label).
        settings = {"sampler": sampler, "steps": steps, "guidance": guidance if digit is not None else 0.0}
        pipe = self._pipeline(self.model)
        passes = pipe.passes(pipe.settings(**settings), digit is not None)

        def run(pipe: Pipeline, callback: Callable[[dict], None]) -> torch.Tensor:
            return torch.from_numpy(pipe.sample(1, digit=digit, seed=seed, callback=callback, **settings))

        yield from self._stream(job, run, _step_frames(steps), _result_frame({"passes_per_digit": passes}))

    def complete(self, body: dict, job: Job) -> Iterator[dict]:
        pixels, known = _pixel_list(body, "pixels", 255), _pixel_list(body, "known", 1).bool()
        if bool(known.all()) or not bool(known.any()):
            raise RequestError("the mask must keep some pixels and erase others: mark the part to draw")
        digit = self._digit(body, required=False)
        method = _choice(body, "method", COMPLETION_METHODS, DEFAULT_METHOD)
        steps = self._steps(body, REPAINT_STEPS if method == "repaint" else FEW_STEPS)
        seed = integer_field(body, "seed", 0, MAX_SEED, 0)
        outcome: dict[str, Any] = {"method": method, "digit": digit, "guessed": False}

        def run(pipe: Pipeline, callback: Callable[[dict], None]) -> torch.Tensor:
            completed, digits = pipe.complete_with_digits(pixels.numpy(), known.numpy(), digit=digit, num_per_image=1,
                                                          method=method, seed=seed, steps=steps, callback=callback)
            if digit is None and digits is not None:  # the digit the strokes most likely begin, as in `complete`
                outcome.update(digit=int(digits[0]), guessed=True)
            return torch.from_numpy(completed)

        yield from self._stream(job, run, _step_frames(steps), _result_frame(outcome))

    def interpolate(self, body: dict, job: Job) -> Iterator[dict]:
        mode = _choice(body, "mode", ("seeds", "digits"), "seeds")
        frames = integer_field(body, "frames", 2, MAX_FRAMES, 8)
        common = {"frames": frames, "guidance": _number(body, "guidance", 0.0, MAX_GUIDANCE, self.defaults.guidance),
                  "steps": self._steps(body, FEW_STEPS)}
        if mode == "seeds":
            pair = body.get("seeds")
            if not (isinstance(pair, list) and len(pair) == 2):
                raise RequestError("seeds must be a list of two seeds")
            common["seeds"] = tuple(integer_field({"seed": seed}, "seed", 0, MAX_SEED) for seed in pair)
            common["digit"] = self._digit(body, required=False)
        else:
            pair = body.get("digits")
            if not (isinstance(pair, list) and len(pair) == 2):
                raise RequestError("digits must be a list of two digits")
            common["digits"] = (self._digit({"digit": pair[0]}, True), self._digit({"digit": pair[1]}, True))
            common["seed"] = integer_field(body, "seed", 0, MAX_SEED, 0)

        def run(pipe: Pipeline, callback: Callable[[dict], None]) -> torch.Tensor:
            return torch.from_numpy(pipe.interpolate(**common))

        def frames_of(pictures: torch.Tensor, seconds: float) -> list[dict]:
            return [*({"type": "frame", "frame": index + 1, "frames": frames, "pixels": frame.flatten().tolist()}
                      for index, frame in enumerate(pictures)), {"type": "done", "frames": frames}]

        yield from self._stream(job, run, None, frames_of)

    def _stream(self, job: Job, run: Callable[[Pipeline, Callable[[dict], None]], torch.Tensor],
                step_frame: Callable[[dict, float], dict] | None,
                result_frames: Callable[[torch.Tensor, float], list[dict]]) -> Iterator[dict]:
        """Run `run(pipeline, callback)` in a worker thread on this job's view of the shared network,
        which returns uint8 digits; yield `step_frame` of every step as it arrives, then the
        `result_frames`. Frames cross threads through a queue, so the HTTP thread can pace them and
        notice a client that has gone. Closing
        the iterator (or the client going) cancels the work within one network pass."""
        items: queue.Queue = queue.Queue()
        started = time.perf_counter()
        model = _SerializedModel(self.model, self.lock, job.cancelled)

        def callback(step: dict) -> None:
            if step_frame is not None:
                items.put(step_frame(step, time.perf_counter() - started))

        def work() -> None:
            try:
                result = run(self._pipeline(model), callback)
                for item in result_frames(result, time.perf_counter() - started):
                    items.put(item)
            except Cancelled:
                pass
            except Exception as error:  # reported in the stream; the server goes on
                items.put({"type": "error", "error": " ".join(str(error).split())})
            finally:
                self.workers.pop(threading.current_thread(), None)
                job.on_finish()

        worker = threading.Thread(target=work, daemon=True)
        self.workers[worker] = job.cancelled
        worker.start()
        try:
            while True:
                try:
                    item = items.get(timeout=POLL_S)
                except queue.Empty:
                    if job.client_gone():
                        return
                    continue
                yield item
                if item["type"] != "frame":
                    return
        finally:
            job.cancelled.set()  # a no-op when the work is done; otherwise it stops at its next pass

    def stop_all(self, timeout_s: float = 10.0) -> None:
        """Cancel every running job and wait (up to `timeout_s`) for its worker to end: each stops at its
        next network pass, so the process can exit without a worker inside torch."""
        for cancelled in list(self.workers.values()):
            cancelled.set()
        for worker in list(self.workers):
            worker.join(timeout_s)

    def test_digit(self, seed: int) -> dict[str, Any]:
        if self.test_images is None or self.test_labels is None:
            labels = torch.tensor([seed % self.num_classes]) if self.num_classes else None
            model = _SerializedModel(self.model, self.lock, threading.Event())
            image = to_uint8(self._pipeline(model).generate(1, labels, self.defaults,
                                                            torch.Generator().manual_seed(seed)))[0]
            return {"pixels": image.flatten().tolist(), "label": None if labels is None else int(labels[0]),
                    "source": "drawn by the model (no MNIST test data found)"}
        index = int(torch.randint(len(self.test_images), (1,), generator=torch.Generator().manual_seed(seed)))
        return {"pixels": self.test_images[index].flatten().tolist(), "label": int(self.test_labels[index]),
                "source": f"MNIST test digit {index}"}


def _step_frames(steps: int) -> Callable[[dict, float], dict]:
    """A sampler step as a frame: its number and its predicted clean digit."""
    def frame(step: dict, seconds: float) -> dict:
        return {"type": "frame", "step": step["i"] + 1, "steps": steps, "t": int(step["t"]),
                "pixels": to_uint8(step["x0"][:1].cpu())[0].flatten().tolist(), "ms": round(1000 * seconds)}

    return frame


def _result_frame(extra: dict[str, Any]) -> Callable[[torch.Tensor, float], list[dict]]:
    def frames(result: torch.Tensor, seconds: float) -> list[dict]:
        return [{"type": "done", "pixels": result[0].flatten().tolist(), "seconds": round(seconds, 3),
                 **extra}]

    return frames
