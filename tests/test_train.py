from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_diffusion import train as train_module
from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.config import DiffusionConfig, TrainConfig, preset
from mnist_diffusion.data import to_model_space
from mnist_diffusion.rundir import LOCK_FILE, RunDirectory, RunDirError, RunInUseError, RunLock
from mnist_diffusion.schedule import NoiseSchedule
from mnist_diffusion.train import EMA, Trainer, TrainingError, diffusion_loss, learning_rate
from mnist_diffusion.unet import UNet

from conftest import SteppingClock, fake_mnist

DIFFUSION = DiffusionConfig(num_timesteps=50)


def tiny_data(count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = fake_mnist(count)
    return torch.from_numpy(images), torch.from_numpy(labels.astype("int64"))


def make_trainer(run_dir: Path, clock=None, **overrides) -> Trainer:
    images, labels = tiny_data()
    settings = {"batch_size": 16, "max_steps": 6, "checkpoint_every": 2, "sample_every": 1000, "log_every": 1,
                "warmup_steps": 2, "ema_warmup_steps": 1} | overrides
    return Trainer(run_dir, preset("tiny"), DIFFUSION, TrainConfig(**settings), images=images, labels=labels,
                   device="cpu", **({"clock": clock} if clock is not None else {}))



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


def test_a_model_taught_black_trains_on_black_below_minus_one(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def recording_loss(model, schedule, x0, *rest):
        seen.append(x0)
        return original(model, schedule, x0, *rest)

    original = train_module.diffusion_loss
    monkeypatch.setattr(train_module, "diffusion_loss", recording_loss)
    images, labels = tiny_data()
    trainer = Trainer(tmp_path / "run", preset("tiny", black_margin=0.25), DIFFUSION,
                      TrainConfig(batch_size=16, max_steps=1), images=images, labels=labels, device="cpu")
    trainer.run()
    x0 = seen[0]
    assert x0.min() == -1.25 and not torch.any((x0 < -1) & (x0 > -1.25))
    assert load_checkpoint(trainer.run_dir.checkpoints()[-1][1]).model_config.black_margin == 0.25


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


def test_the_decay_starts_where_warm_up_ends(tmp_path: Path) -> None:
    """The cosine used to run from step 0, so the rate dropped 2.7% the step after a 200-step warm-up
    of a 1,882-step run: the first decayed step must be at the peak, the last at zero."""
    trainer = make_trainer(tmp_path / "run", max_steps=12, warmup_steps=4)
    rates = []
    for step in range(12):
        trainer.state.step = step
        rates.append(learning_rate(trainer.config, step, trainer.decay_progress(elapsed_s=0.0)))
    assert rates[3] == rates[4] == trainer.config.lr  # end of warm-up, then the decay's first step
    assert rates[8] == pytest.approx(trainer.config.lr / 2)  # half-way through steps 4..12
    assert all(later < earlier for earlier, later in itertools.pairwise(rates[4:]))


def test_decay_progress_is_the_nearest_of_the_step_and_time_limits(tmp_path: Path) -> None:
    trainer = make_trainer(tmp_path / "run", max_steps=12, max_minutes=2.0, warmup_steps=2)
    trainer.state.step, trainer.state.warmup_elapsed_s = 7, 0.0
    assert trainer.decay_progress(elapsed_s=30.0) == pytest.approx(0.5)  # steps: 5 of 10; time: 0.25
    assert trainer.decay_progress(elapsed_s=90.0) == pytest.approx(0.75)  # time binds first
    assert trainer.decay_progress(elapsed_s=1000.0) == 1.0
    trainer.state.warmup_elapsed_s = 20.0  # the time decay counts from the end of warm-up
    assert trainer.decay_progress(elapsed_s=90.0) == pytest.approx(70 / 100)


def test_a_time_budget_resumes_with_the_clock_it_stopped_at(tmp_path: Path) -> None:
    """With --max-minutes the rate follows elapsed time, which checkpoints carry across resumes
    (with the warm-up's end), so a resumed run goes on along the same decay curve."""
    first = make_trainer(tmp_path / "run", clock=SteppingClock(0.5), max_steps=None, max_minutes=0.1,
                         warmup_steps=2)
    result = first.run()
    assert 2 < result.step < 12 and 6.0 <= result.elapsed_s < 8.0  # the budget of 6 s on the injected clock
    resumed = make_trainer(tmp_path / "run", clock=SteppingClock(0.5), max_steps=None, max_minutes=10.0,
                           warmup_steps=2)
    assert resumed.step == result.step
    assert resumed.state.elapsed_before_s == pytest.approx(result.elapsed_s, abs=1e-3)
    assert resumed.state.warmup_elapsed_s == pytest.approx(first.state.warmup_elapsed_s, abs=1e-3)
    budget_s = 600.0 - resumed.state.warmup_elapsed_s
    expected = (result.elapsed_s - resumed.state.warmup_elapsed_s) / budget_s
    assert resumed.decay_progress(result.elapsed_s) == pytest.approx(expected, abs=1e-4)
    # The resumed run goes on from the stored clock: its first logged row continues the count.
    resumed.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[result.step]["elapsed_s"] > result.elapsed_s


def test_training_updates_the_ema_it_saves(tmp_path: Path) -> None:
    """The checkpoint's EMA weights are the average the formula gives over the run's raw weights."""
    trainer = make_trainer(tmp_path / "run", max_steps=5, ema_warmup_steps=2, ema_decay=0.5)
    history = []
    step = trainer.train_step

    def recorded_step(*args, **kwargs):
        loss = step(*args, **kwargs)
        history.append({name: value.detach().clone() for name, value in trainer.model.state_dict().items()})
        return loss

    trainer.train_step = recorded_step
    trainer.run()
    saved = load_checkpoint(RunDirectory(tmp_path / "run").checkpoints()[-1][1])
    expected = {name: torch.zeros_like(value) for name, value in history[0].items()}
    for index, weights in enumerate(history):
        decay = trainer.state.ema.decay_at(index)  # 0 (a plain copy) during the EMA's warm-up
        assert decay == 0 if index < 2 else 0 < decay <= 0.5
        for name, value in weights.items():
            if value.is_floating_point():
                expected[name] = decay * expected[name] + (1 - decay) * value
    for name, value in saved.ema_state.items():
        if name in dict(trainer.model.named_parameters()):
            torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(saved.ema_state[name], saved.model_state[name])
               for name, _ in trainer.model.named_parameters())


def test_a_larger_step_limit_on_resume_stretches_the_rest_of_the_decay(tmp_path: Path) -> None:
    make_trainer(tmp_path / "run", max_steps=6, warmup_steps=2).run()
    longer = make_trainer(tmp_path / "run", max_steps=12, warmup_steps=2)
    assert longer.step == 6 and longer.decay_progress(0.0) == pytest.approx((6 - 2) / (12 - 2))


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
    names = [path.name for _, path in RunDirectory(tmp_path / "run").checkpoints()]
    assert names == ["step_00000004.safetensors", "step_00000006.safetensors"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert (tmp_path / "run" / "config.json").exists()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


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
    assert (b.step, b.images_seen) == (a.step, a.images_seen) == (6, 6 * 16)
    for key in a.model_state:
        assert torch.equal(a.model_state[key], b.model_state[key]), key
        assert torch.equal(a.ema_state[key], b.ema_state[key]), key
    steps = [int(line.split('"step": ')[1].split(",")[0])
             for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_bf16_training_runs_the_network_in_bf16_and_keeps_fp32_weights(tmp_path: Path) -> None:
    seen: dict[str, list[bool]] = {}

    def spy(name: str, trainer: Trainer) -> Trainer:
        hook = lambda module, inputs, output: seen.setdefault(name, []).append(output.dtype == torch.bfloat16)  # noqa: E731
        trainer.model.register_forward_hook(hook)
        return trainer

    fp32 = spy("fp32", make_trainer(tmp_path / "fp32", max_steps=3, precision="fp32")).run()
    bf16 = spy("bf16", make_trainer(tmp_path / "bf16", max_steps=3, precision="bf16")).run()
    assert seen == {"fp32": [False] * 3, "bf16": [True] * 3}
    a, b = load_checkpoint(fp32.checkpoint), load_checkpoint(bf16.checkpoint)
    assert b.train_config.precision == "bf16" and a.train_config.precision == "fp32"
    assert all(value.dtype == torch.float32 for value in [*b.model_state.values(), *b.ema_state.values()])
    for key in a.model_state:  # the same steps, rounded differently: close, not equal
        assert torch.allclose(a.model_state[key], b.model_state[key], atol=2e-2), key
    assert any(not torch.equal(a.model_state[key], b.model_state[key]) for key in a.model_state)
    # The arithmetic is part of the recipe: a resume asked for in fp32 continues in bf16.
    resumed = make_trainer(tmp_path / "bf16", max_steps=4, precision="fp32")
    assert resumed.config.precision == resumed.precision == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_trains_in_bf16_only_where_the_device_computes_it(tmp_path: Path, native: bool,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from mnist_diffusion import devices

    monkeypatch.setattr(devices, "bf16_is_native", lambda device: native)
    assert TrainConfig().precision == "auto"
    assert make_trainer(tmp_path / "run").precision == ("bf16" if native else "fp32")


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
    assert RunDirectory(tmp_path / "run").checkpoints()[-1][1].name == "step_00000004.safetensors"


HOLD_LOCK = """
import sys, time
from pathlib import Path
from mnist_diffusion.rundir import RunLock
with RunLock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(30)
"""


def test_a_live_lock_refuses_a_second_training(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunInUseError, match=f"in use by training process {holder.pid} on "):
            make_trainer(run_dir).run()
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    # The holder died without cleaning up: the kernel released its lock, so the run goes ahead.
    assert make_trainer(run_dir).run().step == 6


def test_a_lock_file_naming_an_unrelated_live_process_does_not_block(tmp_path: Path) -> None:
    """The lock used to be a pid file: pid 1 (always alive) in it blocked training forever."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text("1")
    assert make_trainer(run_dir).run().step == 6


def test_a_run_ending_after_its_directory_was_made_again_leaves_the_new_runs_lock(tmp_path: Path) -> None:
    """The directory removed under a run and made again for a new one: the old run's end must not
    delete the new run's lock file (it did, leaving the new run unlocked to a third)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old = RunLock(run_dir).__enter__()
    shutil.rmtree(run_dir)
    run_dir.mkdir()
    with RunLock(run_dir):
        old.__exit__(None, None, None)
        assert (run_dir / LOCK_FILE).exists()
        with pytest.raises(RunInUseError):
            RunLock.check_free(run_dir)


RACE = """
import os, sys, time
from pathlib import Path
from mnist_diffusion.rundir import RunLock, RunInUseError
run_dir, start = Path(sys.argv[1]), float(sys.argv[2])
attempts = run_dir.parent / (run_dir.name + ".attempts")

def attempted():
    (attempts / str(os.getpid())).touch()

while time.time() < start:
    pass
try:
    with RunLock(run_dir):
        attempted()
        deadline = time.monotonic() + 60
        while len(list(attempts.iterdir())) < 2 and time.monotonic() < deadline:  # hold until the other tried
            time.sleep(0.01)
        print("got it")
except RunInUseError:
    attempted()
    print("refused")
"""


def test_two_processes_entering_at_the_same_instant_never_both_get_the_lock(tmp_path: Path) -> None:
    """The old check-then-write lock let both of two simultaneous processes in (2 of 20 trials)."""
    for trial in range(10):
        run_dir = tmp_path / f"run{trial}"
        run_dir.mkdir()
        (tmp_path / f"run{trial}.attempts").mkdir()
        start = f"{time.time() + 1.0:.3f}"  # both spin until the same instant, then take the lock
        processes = [subprocess.Popen([sys.executable, "-c", RACE, str(run_dir), start], stdout=subprocess.PIPE,
                                      text=True) for _ in range(2)]
        outcomes = sorted(process.communicate(timeout=60)[0].strip() for process in processes)
        assert outcomes == ["got it", "refused"], (trial, outcomes)


def test_unwritable_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RunDirError, match="cannot create run directory"):
        make_trainer(blocker / "run").run()


def test_min_snr_loss_with_an_unreachable_cap_is_plain_mse() -> None:
    torch.manual_seed(0)
    model, schedule = UNet(preset("tiny", num_classes=0)), NoiseSchedule(DIFFUSION)
    x0, t = to_model_space(tiny_data(8)[0]), torch.randint(0, DIFFUSION.num_timesteps, (8,))
    noise = torch.randn_like(x0)
    plain = diffusion_loss(model, schedule, x0, None, t, noise)
    torch.testing.assert_close(diffusion_loss(model, schedule, x0, None, t, noise, min_snr_gamma=1e12), plain)
    assert diffusion_loss(model, schedule, x0, None, t, noise, min_snr_gamma=0.1) < plain


def test_lognormal_timesteps_take_the_step_of_nearest_noise_level() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    log_sigma = -0.5 * schedule.log_snr.double()
    generator = torch.Generator().manual_seed(0)
    t = schedule.lognormal_timesteps(20_000, -1.2, 1.2, generator)
    draws = -1.2 + 1.2 * torch.randn(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    distance = (log_sigma[None, :] - draws[:, None]).abs()
    assert torch.equal(t, distance.argmin(1))  # the nearest step, not merely a near one
    # The law itself: half the draws below the mean's noise level, about 84% below mean + std.
    assert abs((log_sigma[t] < -1.2).double().mean().item() - 0.5) < 0.02
    assert abs((log_sigma[t] < 0.0).double().mean().item() - 0.841) < 0.02
    far = schedule.lognormal_timesteps(100, 50.0, 0.1)  # beyond the noisiest step: clamped to it
    assert (far == schedule.num_timesteps - 1).all()


def test_training_draws_timesteps_from_the_configured_law(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[torch.Tensor]] = {"uniform": [], "lognormal": []}
    real_loss = train_module.diffusion_loss
    law = ["uniform"]

    def spy(model, schedule, x0, labels, t, *rest):
        seen[law[0]].append(t.clone())
        return real_loss(model, schedule, x0, labels, t, *rest)

    monkeypatch.setattr(train_module, "diffusion_loss", spy)
    for name in seen:
        law[0] = name
        images, labels = tiny_data()
        config = TrainConfig(batch_size=64, max_steps=4, sample_every=1000, checkpoint_every=1000,
                             timestep_sampling=name, lognormal_mean=-1.0, lognormal_std=0.5)
        Trainer(tmp_path / name, preset("tiny"), DiffusionConfig(), config, images=images, labels=labels,
                device="cpu").run()
    uniform, lognormal = torch.cat(seen["uniform"]).double(), torch.cat(seen["lognormal"])
    assert 350 < uniform.mean() < 650
    schedule = NoiseSchedule(DiffusionConfig())
    log_sigma = -0.5 * schedule.log_snr.double()[lognormal]
    assert abs(log_sigma.mean().item() + 1.0) < 0.1 and abs(log_sigma.std().item() - 0.5) < 0.1


@pytest.mark.parametrize("settings", [{"timestep_sampling": "beta"}, {"lognormal_std": 0.0},
                                      {"lognormal_mean": float("nan")}])
def test_a_timestep_law_that_cannot_be_drawn_is_refused(settings: dict) -> None:
    with pytest.raises(ValueError, match=r"timestep|log-normal|lognormal_mean must be a finite number"):
        TrainConfig(**settings)


def test_each_epoch_visits_every_image_once_in_its_own_shuffled_order(tmp_path: Path) -> None:
    """The data order of epoch e is a permutation seeded by (seed, e): every image once per epoch, not
    in file order, another order next epoch, the same order for the same seed (and so on resume)."""
    trainer = make_trainer(tmp_path / "run", batch_size=8)
    per_epoch = trainer.steps_per_epoch

    def epoch_order(t: Trainer, epoch: int) -> torch.Tensor:
        return torch.cat([t.batch_indices(epoch * per_epoch + i) for i in range(per_epoch)])

    first, second = epoch_order(trainer, 0), epoch_order(trainer, 1)
    count = per_epoch * 8
    assert sorted(first.tolist()) == list(range(count)) == sorted(second.tolist())  # each image once an epoch
    assert not torch.equal(first, torch.arange(count))  # shuffled, not the files' order
    assert not torch.equal(first, second)  # a new order each epoch
    assert torch.equal(epoch_order(make_trainer(tmp_path / "again", batch_size=8), 1), second)
    assert not torch.equal(epoch_order(make_trainer(tmp_path / "other", batch_size=8, seed=1), 0), first)


def test_clean_up_deletes_only_the_temporaries_a_killed_checkpoint_write_left(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_trainer(run, max_steps=2).run()
    checkpoints = run / "checkpoints"
    stale = checkpoints / ".step_00000004.safetensors.ab_12xyz.tmp"
    mine = [checkpoints / ".step_mine.tmp", checkpoints / ".step_00000004.safetensors.notes.tmp"]
    for path in (stale, *mine):
        path.write_text("x")
    make_trainer(run, max_steps=3).run()
    assert not stale.exists()
    assert all(path.exists() for path in mine)  # a user's files, whatever they look like, stay


def test_a_metrics_line_nested_thousands_deep_is_dropped_on_resume_and_named_by_figures(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import assert_one_line_error, run_cli

    run = tmp_path / "run"
    make_trainer(run, max_steps=2).run()
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + "[" * 100_000 + "]" * 100_000 + "\n" + metrics.read_text())
    result = make_trainer(run, max_steps=3).run()  # resumes past the damaged line, and drops it
    assert result.step == 3 and "[[[" not in metrics.read_text()
    metrics.write_text("[" * 100_000 + "]" * 100_000 + "\n" + metrics.read_text())
    code, _, err = run_cli(capsys, "figures", "--run-dir", str(run), "--out-dir", str(tmp_path / "fig"))
    assert_one_line_error(code, err, "not a JSON object")


def test_a_run_in_use_says_so_before_any_other_verdict(tmp_path: Path, mnist_root: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A second `train` on a run in use once read its checkpoints first, and said "none of the 3
    checkpoints loads" (exit 2) while the first was writing them; the lock is now the first check."""
    from conftest import run_cli

    run_dir = tmp_path / "run"
    make_trainer(run_dir, max_steps=4).run()
    for path in (run_dir / "checkpoints").glob("step_*.safetensors"):
        path.write_bytes(b"half written")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        code, _, err = run_cli(capsys, "train", "--run-dir", str(run_dir), "--max-steps", "8", "--preset", "tiny",
                               "--data-root", str(mnist_root))
        assert code == 1 and "is in use by training process" in err, err
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
