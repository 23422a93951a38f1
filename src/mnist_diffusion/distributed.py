"""Devices and processes: which device a process computes on, and how ranks of a `torchrun` job agree.

`choose_device` is a pure function of the request, the environment and the number of visible
GPUs, so every rule is testable without a GPU. Under `torchrun` each process owns the GPU of its
`LOCAL_RANK` (`cuda:LOCAL_RANK`), which must be made the current CUDA device before the NCCL
process group is created, or every rank's collectives land on `cuda:0`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


def choose_device(requested: str | None, env: Mapping[str, str], cuda_devices: int) -> torch.device:
    """The device this process should use.

    requested: None or "auto" (CUDA when present, else CPU), "cpu", "cuda" or "cuda:N".
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
            raise ValueError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N") from None
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"unsupported device {requested!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cpu":
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
    return choose_device(requested, os.environ, cuda_devices)


def world_size(env: Mapping[str, str]) -> int:
    try:
        return int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be a whole number, got {env.get('WORLD_SIZE')!r}") from None


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the job: one process (rank 0 of 1) unless launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    # Where the tensors of collectives live: NCCL takes only CUDA tensors on the process's own GPU.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def max_over_ranks(self, value: float) -> float:
        """The largest of every rank's `value` (the value itself in a single process)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if it is true on any rank (e.g. one of them was told to stop)."""
        return self.max_over_ranks(1.0 if flag else 0.0) > 0


def join_process_group(device: torch.device) -> ProcessGroup:
    """Join the torchrun job when there is one (gloo on CPU, NCCL on CUDA); else a one-process group."""
    size = world_size(os.environ)
    if size <= 1:
        return ProcessGroup(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before the process group, so NCCL binds this rank's GPU
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ProcessGroup(dist.get_rank(), dist.get_world_size(), device)


def leave_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# -- CPU threads ------------------------------------------------------------------------------------
# Measured on 2 cores (benchmarks/results/threads.md): beside one busy core, torch with 2 threads
# sampled 4x slower than with 1 (its threads wait for each other at every operation), while on an
# idle machine 2 threads were 1.5x faster than 1. So "auto" uses the cores that are idle now.

def busy_cores(interval_s: float = 0.05, stat_path: str = "/proc/stat") -> float:
    """How many cores other programs keep busy: from two readings of the kernel's CPU counters
    `interval_s` apart, else (no /proc, as on macOS) the one-minute load average."""
    def totals() -> tuple[int, int]:
        with open(stat_path) as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    try:
        busy_before, total_before = totals()
        time.sleep(interval_s)
        busy_after, total_after = totals()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    share = (busy_after - busy_before) / max(total_after - total_before, 1)
    return share * (os.cpu_count() or 1)


_last_reading: tuple[float, float] | None = None  # (when, busy cores): one reading serves a few seconds
READING_LIFETIME_S = 10.0


def choose_threads(requested: str | int, cores: int | None = None, busy: float | None = None) -> int:
    """Torch threads for this process: a number as asked, or for "auto" the cores not busy now (at
    least 1). `cores` and `busy` default to this machine's (a reading is reused for
    `READING_LIFETIME_S`, so a program calling many commands measures once); tests give their own."""
    global _last_reading
    if requested != "auto":
        return int(requested)
    cores = cores or os.cpu_count() or 1
    if busy is None:
        now = time.monotonic()
        if _last_reading is None or now - _last_reading[0] > READING_LIFETIME_S:
            _last_reading = (now, busy_cores())
        busy = _last_reading[1]
    return max(1, min(cores, round(cores - busy)))


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
