"""Distillation of the sampling walk (Salimans & Ho 2022): the student's legs, the teacher's landing
points, the loss against its formula, the student's walk drawing what the loss trained, and the
training run that starts as the teacher and resumes as a distillation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mnist_diffusion.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from mnist_diffusion.config import DiffusionConfig, SampleConfig, TrainConfig, preset, student_settings
from mnist_diffusion.distill import Distiller, Legs, teacher_landing
from mnist_diffusion.sampling import Denoiser, generate, timesteps_for
from mnist_diffusion.schedule import NoiseSchedule
from mnist_diffusion.train import Trainer
from mnist_diffusion.unet import UNet

from conftest import fake_mnist, run_cli

SCHEDULE = NoiseSchedule(DiffusionConfig(num_timesteps=1000))
WALK = SampleConfig(precision="fp32")  # the default walk, in exact arithmetic for the formulas


class PointNet(torch.nn.Module):
    """The exact denoiser of data that is one image, `point`: eps = (x_t - alpha_t point) / sigma_t
    whatever the label, so every guided mix of it is itself and the probability-flow ODE keeps eps
    constant. A network of the tiny preset's classes, to stand in for a teacher or a student."""

    def __init__(self, point: torch.Tensor) -> None:
        super().__init__()
        self.config = preset("tiny")
        self.point = point

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        alpha, sigma = SCHEDULE.alpha_sigma(t, x)
        return (x - alpha * self.point) / sigma


def images(seed: int, num: int = 3) -> torch.Tensor:
    return torch.rand(num, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 1.6 - 0.8  # inside [-1, 1]


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 6, 8])
def test_each_leg_starts_at_a_student_point_and_every_teacher_point_is_in_one_leg(steps: int) -> None:
    legs = Legs.build(SCHEDULE, steps, WALK)
    assert legs.student == timesteps_for(student_settings(steps), SCHEDULE).tolist()
    bounds = [*legs.student[1:], -1]
    for start, below, points in zip(legs.student, bounds, legs.teacher, strict=True):
        assert points[0] == start
        assert all(below < t < start for t in points[1:])
        assert points == sorted(points, reverse=True)
    covered = [t for points in legs.teacher for t in points]
    walk = timesteps_for(WALK, SCHEDULE).tolist()
    assert len(covered) == len(set(covered))
    assert set(walk) <= set(covered)


def test_a_student_teaches_with_its_own_walk_in_first_order_steps() -> None:
    """A student as teacher (8 -> 4 -> 2): its legs are cut from its own DDIM grid and walked with
    DDIM's first-order steps, the steps it was trained to take."""
    teacher = PointNet(images(0, 1))
    teacher.config = preset("tiny", student_steps=4)
    distiller = Distiller(teacher, SCHEDULE, 2, torch.device("cpu"))
    assert distiller.walk == student_settings(4) and not distiller.second_order
    assert [t for leg in distiller.legs.teacher for t in leg] == timesteps_for(student_settings(4), SCHEDULE).tolist()


@pytest.mark.parametrize("points, land", [([999, 702, 579], 458), ([458, 434, 273, 139], 133), ([133, 62], 25)])
def test_the_teacher_lands_on_the_exact_flow_of_one_image(points: list[int], land: int) -> None:
    """For data that is one image the flow is x_t = alpha_t point + sigma_t eps with eps fixed, and
    DPM-Solver++(2M) follows it exactly (its data prediction is constant)."""
    point, eps = images(0, 1), torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    denoise = Denoiser(PointNet(point), SCHEDULE, torch.tensor([1, 2, 3]), 1.25, True, (0.3, 0.7), "fp32")
    alpha, sigma = SCHEDULE.alpha_sigma(torch.tensor([points[0]]), point)
    alpha_n, sigma_n = SCHEDULE.alpha_sigma(torch.tensor([land]), point)
    landed = teacher_landing(denoise, alpha * point + sigma * eps, points, land, SCHEDULE)
    torch.testing.assert_close(landed, alpha_n * point + sigma_n * eps, rtol=1e-4, atol=1e-4)
    clean = teacher_landing(denoise, alpha * point + sigma * eps, points, None, SCHEDULE)
    torch.testing.assert_close(clean, point.expand(3, -1, -1, -1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("leg", [0, 1, 2, 3])
def test_the_loss_is_the_landing_error_in_units_of_the_landing_noise(leg: int) -> None:
    """Student and teacher exact for two different images: one DDIM step of the student from s lands
    alpha_n p' + sigma_n eps', the teacher's walk alpha_n p + sigma_n eps; their difference is
    (alpha_n - sigma_n alpha_s / sigma_s)(p' - p). On the last leg the loss is the clean images'
    difference in units of sigma_s / alpha_s."""
    teacher_point, student_point = images(0, 1), images(1, 1)
    distiller = Distiller(PointNet(teacher_point), SCHEDULE, 4, torch.device("cpu"), WALK)
    legs = torch.full((3,), leg)
    noise = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 5, 10])  # the null label too
    loss = distiller.loss(PointNet(student_point), teacher_point, labels, legs, noise)
    start = torch.tensor([distiller.legs.student[leg]])
    alpha_s, sigma_s = SCHEDULE.alpha_sigma(start, noise)
    gap = (student_point - teacher_point).pow(2).mean()
    if leg == 3:
        expected = (alpha_s / sigma_s).pow(2) * gap
    else:
        alpha_n, sigma_n = SCHEDULE.alpha_sigma(torch.tensor([distiller.legs.student[leg + 1]]), noise)
        expected = ((alpha_n - sigma_n * alpha_s / sigma_s) / sigma_n).pow(2) * gap
    torch.testing.assert_close(loss, expected.squeeze(), rtol=2e-3, atol=1e-6)
    assert distiller.loss(PointNet(teacher_point), teacher_point, labels, legs, noise) < 1e-6 * expected.squeeze()


def test_the_student_walk_takes_the_steps_its_loss_measured() -> None:
    """Drawing with `student_settings` visits the legs' start points, one pass each, and each step
    lands at alpha_n x0_hat + sigma_n eps_hat of the student's prediction: the landing the loss
    compares with the teacher's (the last step returns x0_hat)."""
    student, seen = PointNet(images(1, 1)), []
    noise = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    settings = dataclasses.replace(student_settings(4), precision="fp32")
    drawn = generate(student, SCHEDULE, 2, settings, labels=torch.tensor([1, 2]), noise=noise, callback=seen.append)
    legs = Legs.build(SCHEDULE, 4, WALK)
    assert [step["t"] for step in seen] == legs.student
    x = noise
    for i, start in enumerate(legs.student):
        t = torch.full((2,), start)
        x0_hat, eps_hat = SCHEDULE.to_x0_eps(x, t, student(x, t))
        if i + 1 < len(legs.student):
            alpha_n, sigma_n = SCHEDULE.alpha_sigma(torch.tensor([legs.student[i + 1]]), x)
            x = alpha_n * x0_hat + sigma_n * eps_hat
        else:
            x = x0_hat
        torch.testing.assert_close(seen[i]["x"], x, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(drawn, x, rtol=1e-4, atol=1e-4)


def test_a_students_walk_is_summarised_as_it_draws() -> None:
    """Guidance 1 (the conditional output alone) has no interval to name; the fp32 first step is named."""
    assert student_settings(4).summary() == "4 steps of `ddim` ending at t = 25, guidance 1, fp32 on t/T >= 1"
    assert student_settings(4, "consistency").summary() == "4 steps of `consistency` ending at t = 25, guidance 1"
    assert SampleConfig(guidance=2.0).summary().endswith("guidance 2 on t/T 0.3-0.7")


def test_null_label_rows_learn_the_teachers_unconditional_walk() -> None:
    torch.manual_seed(0)
    teacher = UNet(preset("tiny"))
    with torch.no_grad():  # weights away from their zero initialisation, so the label matters
        for parameter in teacher.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    distiller = Distiller(teacher, SCHEDULE, 2, torch.device("cpu"), WALK)
    z = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    mixed = distiller.targets(z, torch.tensor([4, 10, 7]), 0)
    torch.testing.assert_close(mixed[1:2], distiller.targets(z[1:2], None, 0))
    torch.testing.assert_close(mixed[[0, 2]], distiller.targets(z[[0, 2]], torch.tensor([4, 7]), 0))
    assert not torch.allclose(mixed[1:2], distiller.targets(z[1:2], torch.tensor([4]), 0))


def distillation(tmp_path: Path, teacher: Path, max_steps: int, **overrides) -> Trainer:
    images, labels = fake_mnist(64)
    config = TrainConfig(batch_size=16, max_steps=max_steps, teacher=str(teacher), sample_every=1000,
                         checkpoint_every=1000, **overrides)
    # The flags' network (a wider preset) is not what a student is: it is its teacher's, with its steps.
    return Trainer(tmp_path / "run", preset("small", student_steps=2), DiffusionConfig(num_timesteps=1000), config,
                   images=torch.from_numpy(images), labels=torch.from_numpy(labels.astype("int64")), device="cpu")


def test_a_student_starts_as_its_teacher_and_resumes_as_a_distillation(tmp_path: Path, tiny_checkpoint: Path) -> None:
    teacher = load_checkpoint(tiny_checkpoint)
    trainer = distillation(tmp_path, tiny_checkpoint, 2)
    assert trainer.model_config == dataclasses.replace(teacher.model_config, student_steps=2)
    assert trainer.diffusion_config == teacher.diffusion_config
    for name, weight in trainer.model.state_dict().items():
        torch.testing.assert_close(weight, teacher.model_state[name])
    assert trainer.sample_settings == student_settings(2)
    result = trainer.run()
    saved = load_checkpoint(result.checkpoint)
    assert saved.train_config.teacher == str(tiny_checkpoint)
    assert saved.model_config == dataclasses.replace(teacher.model_config, student_steps=2)
    assert any(not torch.equal(saved.model_state[name], teacher.model_state[name]) for name in teacher.model_state)

    resumed = distillation(tmp_path, tiny_checkpoint, 3)
    assert resumed.resumed_from == 2 and resumed.distiller is not None
    assert resumed.run().step == 3


def test_an_interrupted_distillation_resumes_to_the_weights_of_a_straight_one(tmp_path: Path,
                                                                             tiny_checkpoint: Path) -> None:
    """Each step's legs, noise and teacher targets come from the step's own seed, so two steps, a
    stop and two more give the weights of four steps in a row."""
    recipe = {"lr_decay": "none", "warmup_steps": 0}
    straight = distillation(tmp_path / "a", tiny_checkpoint, 4, **recipe).run()
    distillation(tmp_path / "b", tiny_checkpoint, 2, **recipe).run()
    resumed = distillation(tmp_path / "b", tiny_checkpoint, 4, **recipe).run()
    a, b = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert b.step == a.step == 4
    for name in a.model_state:
        assert torch.equal(a.model_state[name], b.model_state[name]), name
        assert torch.equal(a.ema_state[name], b.ema_state[name]), name


def test_a_resumed_student_refuses_a_teacher_of_another_network(tmp_path: Path, tiny_checkpoint: Path) -> None:
    distillation(tmp_path, tiny_checkpoint, 1).run()
    other = UNet(preset("small"))
    save_checkpoint(Checkpoint(preset("small"), DiffusionConfig(num_timesteps=1000), other.state_dict()),
                    tiny_checkpoint)
    with pytest.raises(ValueError, match="not the student's"):
        distillation(tmp_path, tiny_checkpoint, 2)


@pytest.mark.parametrize("flags, message", [
    (["--teacher", "no-such.safetensors"], "no-such.safetensors"),
    (["--teacher", "shipped", "--student-steps", "0"], "must be between 1 and 64"),
    (["--student-steps", "2"], "give the --teacher too"),
    (["--teacher", "shipped", "--guidance-free"], "--guidance-free does not apply"),
    (["--teacher", " "], "teacher must name a checkpoint"),
])
def test_train_refuses_a_bad_teacher_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 flags: list[str], message: str) -> None:
    code, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path / "run"), "--max-steps", "1", *flags)
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_the_command_line_distils_and_draws_the_student_with_its_own_walk(
        tmp_path: Path, tiny_checkpoint: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--run-dir", str(run), "--teacher", str(tiny_checkpoint),
                             "--student-steps", "3", "--max-steps", "1", "--batch-size", "16",
                             "--data-root", str(mnist_root), "--device", "cpu")
    assert code == 0, err
    assert "distilling the walk of" in err and "--sampler ddim --steps 3 --guidance 1" in err
    student = next((run / "checkpoints").glob("*.safetensors"))
    assert load_checkpoint(student).model_config.student_steps == 3
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(student), "--digits", "0-9", "--per-digit", "1",
                           "--out", str(tmp_path / "g.png"))
    assert code == 0, err
    assert "3 steps, 1 branch = 3 network passes per digit" in err
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--digits", "0-9",
                           "--per-digit", "1", "--out", str(tmp_path / "t.png"))
    assert code == 0 and "8 steps, 2 branches on" in err, err  # a model that learned from noise: the defaults
