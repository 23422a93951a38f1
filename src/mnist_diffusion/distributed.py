"""How the ranks of a `torchrun` job agree: the process group and its collectives. Which device
and threads each process uses is `devices.py`'s; under `torchrun` each process owns the GPU of its
`LOCAL_RANK`, which must be made the current CUDA device before the NCCL process group is created,
or every rank's collectives land on `cuda:0`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .devices import world_size


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
