from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_diffusion import train as train_module
from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.config import DiffusionConfig, TrainConfig, preset
from mnist_diffusion.data import to_model_space
from mnist_diffusion.schedule import NoiseSchedule
from mnist_diffusion.train import EMA, Trainer, TrainingError, diffusion_loss, learning_rate
from mnist_diffusion.unet import UNet

from conftest import fake_mnist

DIFFUSION = DiffusionConfig(num_timesteps=50)


def tiny_data(count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = fake_mnist(count)
    return torch.from_numpy(images), torch.from_numpy(labels.astype("int64"))


def make_trainer(run_dir: Path, **overrides) -> Trainer:
    images, labels = tiny_data()
    settings = {"batch_size": 16, "max_steps": 6, "checkpoint_every": 2, "sample_every": 1000, "log_every": 1,
                "warmup_steps": 2, "ema_warmup_steps": 1} | overrides
    return Trainer(run_dir, preset("tiny"), DIFFUSION, TrainConfig(**settings), images=images, labels=labels,
                   device="cpu")


def test_a_few_steps_on_a_fixed_batch_lower_the_loss() -> None:
    torch.manual_seed(0)
    model, schedule = UNet(preset("tiny", num_classes=0)), NoiseSchedule(DIFFUSION)
    x0 = to_model_space(tiny_data(8)[0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def draws(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return torch.randint(0, 50, (len(x0),), generator=generator), torch.randn(x0.shape, generator=generator)

    def fixed_loss() -> float:
        with torch.no_grad():
            return diffusion_loss(model, schedule, x0, None, *draws(1)).item()

    before = fixed_loss()
    for step in range(40):
        loss = diffusion_loss(model, schedule, x0, None, *draws(100 + step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert fixed_loss() < 0.7 * before


def test_ema_update_matches_its_formula() -> None:
    model = torch.nn.Linear(3, 1)
    ema = EMA(model, decay=0.9, warmup_steps=2)
    assert ema.decay_at(0) == 0.0 and ema.decay_at(1) == 0.0
    assert ema.decay_at(2) == pytest.approx(1 / 10) and ema.decay_at(10_000) == 0.9
    before = ema.model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=500)
    torch.testing.assert_close(ema.model.weight, 0.9 * before + 0.1 * model.weight)


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_zero() -> None:
    config = TrainConfig(lr=1e-3, warmup_steps=4)
    assert [learning_rate(config, s, 0.0) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    assert learning_rate(config, 100, 0.5) == pytest.approx(5e-4)
    assert learning_rate(config, 100, 1.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(config, 100, None) == 1e-3  # no limit: nothing to decay towards
    assert learning_rate(TrainConfig(lr=1e-3, lr_decay="none"), 1000, 0.9) == 1e-3


def test_progress_is_the_nearest_of_the_step_and_time_limits(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "run", max_steps=10, max_minutes=2.0)
    trainer.step = 5
    assert trainer.progress(elapsed_s=30.0) == pytest.approx(0.5)  # steps: 5 of 10; time: 0.25
    assert trainer.progress(elapsed_s=90.0) == pytest.approx(0.75)  # time binds first
    assert trainer.progress(elapsed_s=1000.0) == 1.0


def test_min_snr_weighting_downweights_only_the_nearly_clean_timesteps() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    t = torch.tensor([0, 100, 500, 999])
    snr = schedule.alphas_cumprod64[t] / (1 - schedule.alphas_cumprod64[t])
    weight = schedule.min_snr_weight(t, gamma=5.0)
    assert torch.all(weight <= 1.0)
    high = snr > 5
    torch.testing.assert_close(weight[high].double(), 5.0 / snr[high])  # capped at gamma
    torch.testing.assert_close(weight[~high], torch.ones(int((~high).sum())))  # plain MSE
    v_weight = NoiseSchedule(DiffusionConfig(prediction_type="v")).min_snr_weight(t, gamma=5.0)
    torch.testing.assert_close(v_weight.double(), snr.clamp(max=5.0) / (snr + 1), rtol=1e-6, atol=1e-7)


def test_training_writes_checkpoints_metrics_and_keeps_the_last_few(tmp_path: Path) -> None:
    result = make_trainer(tmp_path / "run", keep_checkpoints=2).run()
    assert result.step == 6 and result.images_seen == 96
    names = [p.name for p in train_module.checkpoint_paths(tmp_path / "run")]
    assert names == ["step_00000004.safetensors", "step_00000006.safetensors"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert (tmp_path / "run" / "config.json").exists()
    assert not (tmp_path / "run" / train_module.LOCK_FILE).exists()


def test_trainer_reads_mnist_from_the_data_root(tmp_path: Path, mnist_root: Path) -> None:
    trainer = Trainer(tmp_path / "run", preset("tiny"), DIFFUSION, TrainConfig(batch_size=32, max_steps=1),
                      data_root=mnist_root, device="cpu")
    assert len(trainer.images) == 256
    assert trainer.run().step == 1


def test_resuming_gives_the_same_weights_as_one_straight_run(tmp_path: Path) -> None:
    """Interrupted at step 3 (SIGINT, as Ctrl-C) and run again with the same command: the weights,
    the learning-rate decay and the loss log are those of a run never interrupted."""
    straight = make_trainer(tmp_path / "a", max_steps=6).run()

    def interrupt(row: dict) -> None:
        if row["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    interrupted_trainer = make_trainer(tmp_path / "b", max_steps=6, checkpoint_every=100)
    interrupted_trainer.on_log = interrupt
    interrupted = interrupted_trainer.run()
    assert interrupted.stopped_early and interrupted.step == 3
    resumed_trainer = make_trainer(tmp_path / "b", max_steps=6)
    assert resumed_trainer.step == 3
    resumed = resumed_trainer.run()
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    for key in a.model_state:
        assert torch.equal(a.model_state[key], b.model_state[key]), key
        assert torch.equal(a.ema_state[key], b.ema_state[key]), key
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_non_finite_loss_stops_with_the_step_and_keeps_the_checkpoint(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = make_trainer(tmp_path / "run")
    real_loss = train_module.diffusion_loss

    def loss_that_explodes(*args):
        loss = real_loss(*args)
        return loss * float("nan") if trainer.step == 4 else loss

    monkeypatch.setattr(train_module, "diffusion_loss", loss_that_explodes)
    with pytest.raises(TrainingError, match="at step 4"):
        trainer.run()
    assert train_module.checkpoint_paths(tmp_path / "run")[-1].name == "step_00000004.safetensors"


def test_a_live_lock_refuses_a_second_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (run_dir / train_module.LOCK_FILE).write_text(str(sleeper.pid))
        with pytest.raises(TrainingError, match=f"in use by training process {sleeper.pid}"):
            make_trainer(run_dir).run()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The holder is dead now: its stale lock no longer blocks.
    assert make_trainer(run_dir).run().step == 6


def test_unwritable_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TrainingError, match="cannot create run directory"):
        make_trainer(blocker / "run").run()


def test_min_snr_loss_with_an_unreachable_cap_is_plain_mse() -> None:
    torch.manual_seed(0)
    model, schedule = UNet(preset("tiny", num_classes=0)), NoiseSchedule(DIFFUSION)
    x0, t = to_model_space(tiny_data(8)[0]), torch.randint(0, DIFFUSION.num_timesteps, (8,))
    noise = torch.randn_like(x0)
    plain = diffusion_loss(model, schedule, x0, None, t, noise)
    torch.testing.assert_close(diffusion_loss(model, schedule, x0, None, t, noise, min_snr_gamma=1e12), plain)
    assert diffusion_loss(model, schedule, x0, None, t, noise, min_snr_gamma=0.1) < plain
