"""Where a process computes and how: its device (`pick_device`), its CPU threads (`choose_threads`)
and the network's arithmetic (`resolve_precision`). Sampling, the page and training all read these;
the `torchrun` process group lives in `distributed.py`.

`choose_device` is a pure function of the request, the environment and the devices present, so
every rule is testable without a GPU. Under `torchrun` each process owns the GPU of its
`LOCAL_RANK` (`cuda:LOCAL_RANK`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping

import torch


def choose_device(requested: str | None, env: Mapping[str, str], cuda_devices: int,
                  mps_available: bool = False) -> torch.device:
    """The device this process should use.

    requested: None or "auto" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N" or "mps"
        (Apple's GPU, where this torch has it; never chosen by "auto", whose bf16 it lacks).
    env: the process environment; `WORLD_SIZE` > 1 means a `torchrun` job, `LOCAL_RANK` this
        process's index on its machine.
    cuda_devices: how many CUDA devices this process sees.
    """
    if requested in (None, "auto"):
        device = torch.device("cuda" if cuda_devices > 0 else "cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError:
            raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps") from None
        if device.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"unsupported device {requested!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cpu":
        return device
    if device.type == "mps":
        if not mps_available:
            raise ValueError(f"device {requested} was asked for, but this torch has no MPS device here")
        if world_size(env) > 1:
            raise ValueError("torchrun jobs run on cpu or cuda, not mps")
        return device
    if cuda_devices == 0:
        raise ValueError(f"--device {requested} was asked for, but no CUDA device is available")
    if world_size(env) > 1:
        if device.index is not None:
            raise ValueError(f"--device {requested}: under torchrun every process uses the GPU of its "
                             f"LOCAL_RANK; pass --device cuda (or auto)")
        local_rank = int(env.get("LOCAL_RANK", "0"))
        if local_rank >= cuda_devices:
            raise ValueError(f"LOCAL_RANK is {local_rank} but this process sees {cuda_devices} CUDA "
                             f"device(s): start at most {cuda_devices} processes per machine")
        return torch.device("cuda", local_rank)
    if device.index is not None and device.index >= cuda_devices:
        raise ValueError(f"--device {requested}: this machine has {cuda_devices} CUDA device(s)")
    return device


def pick_device(requested: str | None = None) -> torch.device:
    """`choose_device` for this process: its environment and its visible GPUs."""
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    mps = getattr(torch.backends, "mps", None)
    return choose_device(requested, os.environ, cuda_devices, bool(mps and mps.is_available()))


def world_size(env: Mapping[str, str]) -> int:
    try:
        return int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be a whole number, got {env.get('WORLD_SIZE')!r}") from None


# -- CPU threads ------------------------------------------------------------------------------------
# Measured on 2 cores (benchmarks/results/threads.md): beside one busy core, torch with 2 threads
# sampled 4x slower than with 1 (its threads wait for each other at every operation), while on an
# idle machine 2 threads were 1.5x faster than 1. So "auto" uses the cores that are idle now.

def _machine_ticks(stat_path: str = "/proc/stat") -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in clock ticks summed over its cores."""
    with open(stat_path) as handle:
        fields = [int(value) for value in handle.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_cores(interval_s: float = 0.05, stat_path: str = "/proc/stat") -> float:
    """How many cores other programs keep busy: from two readings of the kernel's CPU counters
    `interval_s` apart, else (no /proc, as on macOS) the one-minute load average."""
    try:
        busy_before, total_before = _machine_ticks(stat_path)
        time.sleep(interval_s)
        busy_after, total_after = _machine_ticks(stat_path)
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    share = (busy_after - busy_before) / max(total_after - total_before, 1)
    return share * (os.cpu_count() or 1)


def _own_ticks() -> float:
    """This process's CPU time so far (all its threads), in the kernel's clock ticks."""
    return time.process_time() * os.sysconf("SC_CLK_TCK")


class AutoThreads:
    """`--threads auto` decided again as the load changes: `decide` gives the cores that other programs
    left idle since the previous decision, from the machine's CPU counters less this process's own CPU
    time. Nothing waits: each call reads two counters, so sampling can ask between network batches.

    Readings closer together than `MIN_TICKS_PER_CORE` (half a second) are not enough to judge by: the
    current count is kept and the interval grows until the next call."""

    MIN_TICKS_PER_CORE = 50

    def __init__(self, cores: int, machine: Callable[[], tuple[int, int]] = _machine_ticks,
                 own: Callable[[], float] = _own_ticks) -> None:
        self.cores, self._machine, self._own = cores, machine, own
        self._last = (*machine(), own())

    def decide(self, current: int) -> int:
        busy, total, own = (*self._machine(), self._own())
        busy_before, total_before, own_before = self._last
        if total - total_before < self.MIN_TICKS_PER_CORE * self.cores:
            return current
        self._last = (busy, total, own)
        others = max(0.0, (busy - busy_before) - (own - own_before)) / (total - total_before) * self.cores
        return max(1, min(self.cores, round(self.cores - others)))


_last_reading: tuple[float, float] | None = None  # (when, busy cores): one reading serves a few seconds
READING_LIFETIME_S = 10.0
_auto: AutoThreads | None = None  # set while this process's threads are "auto"


def choose_threads(requested: str | int, cores: int | None = None, busy: float | None = None) -> int:
    """Torch threads for this process: a number as asked, or for "auto" the cores not busy now (at
    least 1). `cores` and `busy` default to this machine's (a reading is reused for
    `READING_LIFETIME_S`, so a program calling many commands measures once); tests give their own.
    On this machine, "auto" is decided again between network batches (`revisit_threads`)."""
    global _last_reading, _auto
    if requested != "auto":
        _auto = None
        return int(requested)
    measured = cores is None and busy is None
    cores = cores or os.cpu_count() or 1
    if busy is None:
        now = time.monotonic()
        if _last_reading is None or now - _last_reading[0] > READING_LIFETIME_S:
            _last_reading = (now, busy_cores())
        busy = _last_reading[1]
    if measured:
        _auto = _watch_load(cores)
    return max(1, min(cores, round(cores - busy)))


def _watch_load(cores: int) -> AutoThreads | None:
    """The `AutoThreads` that `revisit_threads` asks, or None where the machine has no /proc/stat
    (there "auto" is decided once)."""
    try:
        return AutoThreads(cores)
    except (OSError, ValueError, IndexError):
        return None


def revisit_threads() -> int:
    """Under "auto" threads, set torch's thread count to `AutoThreads.decide` (a cheap call: sampling
    makes it before each network batch, so a core another program takes mid-run is given up, and
    taken back when it is free). Returns the count in use."""
    current = torch.get_num_threads()
    if _auto is not None:
        try:
            wanted = _auto.decide(current)
        except (OSError, ValueError, IndexError):
            return current
        if wanted != current:
            torch.set_num_threads(wanted)
        return wanted
    return current


# Arithmetic of the network's forward pass: "fp32", or "bf16" (bfloat16 autocast: convolutions and
# matrix products in bf16, the rest, the loss and the sampler's own arithmetic in fp32).
PRECISIONS = ("fp32", "bf16")


def bf16_is_native(device: torch.device | str) -> bool:
    """Whether `device` computes bfloat16 convolutions natively: a CUDA GPU that supports them, or a
    CPU whose oneDNN has bfloat16 kernels (AVX-512 BF16 or AMX). Elsewhere bf16 is emulated and slower."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and \
        bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """"auto" -> "bf16" where `bf16_is_native(device)`, else "fp32"; "fp32" and "bf16" as they are."""
    if precision == "auto":
        return "bf16" if bf16_is_native(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from auto, {', '.join(PRECISIONS)}")
    return precision


# -- compiled networks ------------------------------------------------------------------------------

class CompiledNetwork:
    """A network under `torch.compile` for sampling (`SampleConfig.compile`), called like the network.

    Inductor fuses group norm, SiLU and the additions around the convolutions, which is where eager
    spends most of a pass (benchmarks/results/faster-cleaner-2026-12-07.md). Each input shape compiles
    once, on its first call, and inductor's on-disk caches keep the result for the next process.
    Without freezing: folding the weights into the graph makes each pass faster, but graphs with frozen
    weights are not cached, so every process compiled again; from a cache a process now starts in
    seconds, which pays for the slower passes in a process of up to thousands of digits (there,
    "--compile from one process to the next"). A failure to compile (no C++ compiler for the
    CPU, no triton for CUDA) is a `RuntimeError` saying so. `compiled_network` compiles again when the
    weights change in place, so a cached network never outlives the weights it was made for."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.config = model, getattr(model, "config", None)
        self.weights = _weights_version(model)
        self._compiled = torch.compile(model, dynamic=False)

    def __call__(self, *args: object, **kwargs: object) -> torch.Tensor:
        try:
            return self._compiled(*args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as error:
            reason = " ".join(str(error).split())[:300]
            raise RuntimeError(f"--compile: torch.compile could not compile the network here ({reason}); "
                               f"draw without --compile") from None


def _weights_version(model: torch.nn.Module) -> tuple[int, ...]:
    """Changes whenever a weight is changed in place (an optimizer step, `load_state_dict`)."""
    return tuple(parameter._version for parameter in model.parameters())


_compiled: dict[int, CompiledNetwork] = {}  # by id(model), each entry holding its model


def compiled_network(model: torch.nn.Module) -> CompiledNetwork:
    """`CompiledNetwork` of `model`, made once and reused while its weights stay as they were."""
    network = _compiled.get(id(model))
    if network is None or network.model is not model or network.weights != _weights_version(model):
        if network is not None:
            torch._dynamo.reset()  # new weights: compile afresh (quick from inductor's caches)
        network = _compiled[id(model)] = CompiledNetwork(model)
    return network
