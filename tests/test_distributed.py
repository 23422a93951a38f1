"""Which device each process uses, as a pure function of the environment, and how a rank joins."""

from __future__ import annotations

import pytest
import torch

from mnist_diffusion import distributed
from mnist_diffusion.devices import choose_device
from mnist_diffusion.distributed import join_process_group

TORCHRUN_RANK_1 = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}


@pytest.mark.parametrize(("requested", "env", "gpus", "expected"), [
    (None, {}, 0, "cpu"),
    ("auto", {}, 2, "cuda"),
    ("cpu", {}, 2, "cpu"),
    ("cuda:1", {}, 2, "cuda:1"),
    # Under torchrun each process owns the GPU of its LOCAL_RANK, never cuda:0 for everyone.
    ("auto", TORCHRUN_RANK_1, 2, "cuda:1"),
    ("cuda", TORCHRUN_RANK_1, 2, "cuda:1"),
    ("cuda", {"WORLD_SIZE": "8", "LOCAL_RANK": "3"}, 4, "cuda:3"),
    ("cpu", TORCHRUN_RANK_1, 2, "cpu"),  # gloo on CPU
    ("auto", TORCHRUN_RANK_1, 0, "cpu"),
])
def test_the_device_is_chosen_from_the_request_and_the_environment(requested, env, gpus, expected) -> None:
    assert choose_device(requested, env, gpus) == torch.device(expected)


@pytest.mark.parametrize(("requested", "env", "gpus", "message"), [
    ("cuda", {}, 0, "no CUDA device is available"),
    ("cuda:2", {}, 2, "this machine has 2 CUDA device"),
    ("cuda:0", TORCHRUN_RANK_1, 2, "every process uses the GPU of its LOCAL_RANK"),
    ("auto", {"WORLD_SIZE": "4", "LOCAL_RANK": "3"}, 2, "LOCAL_RANK is 3 but this process sees 2"),
    ("tpu", {}, 0, "unknown device 'tpu'"),
    ("meta", {}, 0, "unsupported device 'meta'"),
])
def test_impossible_device_requests_are_refused(requested, env, gpus, message) -> None:
    with pytest.raises(ValueError, match=message):
        choose_device(requested, env, gpus)


def test_a_cuda_rank_binds_its_gpu_before_the_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """NCCL binds the current CUDA device when the group is created; without set_device first every
    rank's collectives sat on cuda:0."""
    calls: list[tuple[str, object]] = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend: calls.append(("init_process_group", backend)))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    group = join_process_group(torch.device("cuda", 1))
    assert calls == [("set_device", torch.device("cuda", 1)), ("init_process_group", "nccl")]
    assert (group.rank, group.world_size, group.device) == (1, 2, torch.device("cuda", 1))


def test_one_process_joins_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group = join_process_group(torch.device("cpu"))
    assert (group.rank, group.world_size, group.is_main) == (0, 1, True)
    assert group.max_over_ranks(2.5) == 2.5 and group.any_rank(True) and not group.any_rank(False)


def test_auto_threads_leave_the_busy_cores_alone(tmp_path) -> None:
    from mnist_diffusion.devices import busy_cores, choose_threads

    assert choose_threads("auto", cores=2, busy=0.0) == 2
    assert choose_threads("auto", cores=2, busy=1.0) == 1  # beside one busy core: 2 threads ran 5.6x slower
    assert choose_threads("auto", cores=8, busy=30.0) == 1
    assert choose_threads(3, cores=2, busy=2.0) == 3  # a number is taken as asked
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 800 0 0 0 0 0 0\n")  # a counter that does not move: nothing busy
    assert busy_cores(interval_s=0.0, stat_path=str(stat)) == 0.0


def test_auto_threads_follow_the_load_between_batches() -> None:
    """Counters scripted as a run would see them on 2 cores: alone; then another program takes a core
    (the machine stays fully busy, this process gets one core's time); then it leaves."""
    from mnist_diffusion.devices import AutoThreads

    machine = iter([(0, 0), (200, 200), (400, 400), (600, 600), (700, 800)])  # (busy, total) ticks, both cores
    own = iter([0.0, 200.0, 300.0, 400.0, 500.0])  # this process's CPU ticks
    threads = AutoThreads(2, machine=lambda: next(machine), own=lambda: next(own))
    assert threads.decide(2) == 2  # alone: every busy tick was its own
    assert threads.decide(2) == 1  # 200 busy ticks, 100 its own: another program held a core
    assert threads.decide(1) == 1  # still there: 1 thread, 1 core busy beside it
    assert threads.decide(1) == 2  # gone: only its own 100 ticks were busy


def test_auto_threads_keep_their_count_over_too_short_an_interval() -> None:
    from mnist_diffusion.devices import AutoThreads

    machine = iter([(0, 0), (10, 10), (200, 200)])
    own = iter([0.0, 0.0, 0.0])
    threads = AutoThreads(2, machine=lambda: next(machine), own=lambda: next(own))
    assert threads.decide(2) == 2  # 10 ticks: too short to judge, kept
    assert threads.decide(2) == 1  # the interval grew to 200 ticks, all another program's: a core is taken
