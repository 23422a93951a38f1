"""Nothing is lost when training is killed; distributed training equals one process."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mnist_diffusion import files as files_module
from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.rundir import RunDirectory, RunDirError
from worker import make_trainer

WORKER = Path(__file__).parent / "worker.py"


def newest_step(run_dir: Path) -> int:
    found = RunDirectory(run_dir).checkpoints()
    return found[-1][0] if found else 0


def newest_path(run_dir: Path) -> Path:
    return RunDirectory(run_dir).checkpoints()[-1][1]


def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    """Kill a training 10 times with SIGKILL at random moments; each time the newest checkpoint must
    load, the next run must resume from it, and the final weights must equal an uninterrupted run."""
    run_dir = tmp_path / "run"
    rng = random.Random(0)
    seen = 0
    for _ in range(10):
        with open(tmp_path / "stderr.txt", "wb") as stderr:
            process = subprocess.Popen([sys.executable, str(WORKER), str(run_dir), "1000000"],
                                       stdout=subprocess.DEVNULL, stderr=stderr)
            deadline = time.monotonic() + 120
            while newest_step(run_dir) <= seen:  # it resumed and made progress
                assert process.poll() is None, (tmp_path / "stderr.txt").read_text()
                assert time.monotonic() < deadline, "training made no progress"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.25))  # land anywhere: mid-step, mid-write, mid-log
            process.send_signal(signal.SIGKILL)
            process.wait()
        checkpoint = RunDirectory(run_dir).loadable_checkpoints(warn=print)[0]
        assert checkpoint.step > seen
        seen = checkpoint.step
    # Finish the killed run and an uninterrupted one the same way (same process settings).
    final_steps = seen + 3
    for directory in (run_dir, tmp_path / "straight"):
        subprocess.run([sys.executable, str(WORKER), str(directory), str(final_steps)], check=True)
    resumed = load_checkpoint(newest_path(run_dir))
    straight = load_checkpoint(newest_path(tmp_path / "straight"))
    assert resumed.step == straight.step == final_steps
    for key, value in straight.model_state.items():
        assert torch.equal(resumed.model_state[key], value), key
        assert torch.equal(resumed.ema_state[key], straight.ema_state[key]), key
    logged = [row["step"] for row in _metrics(run_dir)]
    assert logged == list(range(1, final_steps + 1))  # the loss curve continues as if never stopped


def _metrics(run_dir: Path) -> list[dict]:
    from mnist_diffusion.figures import read_metrics

    return read_metrics(run_dir / "metrics.jsonl")


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    make_trainer(tmp_path / "run", 4).run()
    newest = newest_path(tmp_path / "run")
    newest.write_bytes(newest.read_bytes()[:200])
    messages: list[str] = []
    checkpoint = RunDirectory(tmp_path / "run").loadable_checkpoints(warn=messages.append)[0]
    assert checkpoint.step == 3
    assert "skipping unreadable checkpoint" in messages[0] and newest.name in messages[0]


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk (ENOSPC, as a file system reports it on the flush) while a checkpoint is written:
    one message naming the checkpoint, the previous one intact, no temporary left."""
    import errno
    import os

    trainer = make_trainer(tmp_path / "run", 6)
    real_fsync = os.fsync

    def fsync_until_full(fd: int) -> None:
        if trainer.step >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(files_module.os, "fsync", fsync_until_full)
    with pytest.raises(RunDirError, match=r"step_00000003.safetensors.*No space left.*previous checkpoint is kept"):
        trainer.run()
    assert load_checkpoint(newest_path(tmp_path / "run")).step == 2
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))


def test_two_process_ddp_matches_one_process(tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo): both ranks end with identical weights, equal within float
    tolerance to one process training on the same global batches."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(WORKER), str(tmp_path / "ddp"), "4", "--save-rank-weights"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (load_file(str(tmp_path / "ddp" / f"rank{r}.safetensors")) for r in (0, 1))
    single = make_trainer(tmp_path / "single", 4)
    single.run()
    for key, value in single.model.state_dict().items():
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-5)
    assert load_checkpoint(newest_path(tmp_path / "ddp")).step == 4


def test_sample_with_stderr_closed_still_writes_its_digits(tmp_path: Path) -> None:
    """`progress.py` called `isatty` on a closed stderr (None): exit 1 and nothing written."""
    import os
    import subprocess
    import sys

    out = tmp_path / "x.png"
    result = subprocess.run([sys.executable, "-m", "mnist_diffusion", "sample", "--num", "2", "--steps", "2",
                             "--out", str(out), "--npz", str(tmp_path / "x.npz")],
                            stdout=subprocess.PIPE, preexec_fn=lambda: os.close(2), timeout=300)
    assert result.returncode == 0 and out.exists() and (tmp_path / "x.npz").exists()
