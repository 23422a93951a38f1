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

from mnist_diffusion import train as train_module
from mnist_diffusion.checkpoint import load_checkpoint
from worker import make_trainer

WORKER = Path(__file__).parent / "worker.py"


def newest_step(run_dir: Path) -> int:
    paths = train_module.checkpoint_paths(run_dir)
    return int(paths[-1].stem.split("_")[1]) if paths else 0


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
        checkpoint = train_module.latest_checkpoint(run_dir)
        assert checkpoint is not None and checkpoint.step > seen
        seen = checkpoint.step
    # Finish the killed run and an uninterrupted one the same way (same process settings).
    final_steps = seen + 3
    for directory in (run_dir, tmp_path / "straight"):
        subprocess.run([sys.executable, str(WORKER), str(directory), str(final_steps)], check=True)
    resumed = load_checkpoint(train_module.checkpoint_paths(run_dir)[-1])
    straight = load_checkpoint(train_module.checkpoint_paths(tmp_path / "straight")[-1])
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
    newest = train_module.checkpoint_paths(tmp_path / "run")[-1]
    newest.write_bytes(newest.read_bytes()[:200])
    messages: list[str] = []
    checkpoint = train_module.latest_checkpoint(tmp_path / "run", warn=messages.append)
    assert checkpoint is not None and checkpoint.step == 3
    assert "skipping unreadable checkpoint" in messages[0] and newest.name in messages[0]


def test_a_full_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    trainer = make_trainer(tmp_path / "run", 6)
    real_save = train_module.save_checkpoint

    def save_until_full(checkpoint, path):
        if checkpoint.step >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(checkpoint, path)

    monkeypatch.setattr(train_module, "save_checkpoint", save_until_full)
    with pytest.raises(train_module.TrainingError, match=r"No space left on device.*previous checkpoint is kept"):
        trainer.run()
    assert load_checkpoint(train_module.checkpoint_paths(tmp_path / "run")[-1]).step == 2


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
    assert load_checkpoint(train_module.checkpoint_paths(tmp_path / "ddp")[-1]).step == 4
