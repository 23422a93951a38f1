"""Consistency distillation (Song et al. 2023): the grid it learns on, its loss against the formula
(the target's own clean image without gradient, the teacher's at the walk's end), multistep
consistency sampling, and the command line that distils a consistency student and draws it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.config import DiffusionConfig, ModelConfig, SampleConfig, preset, student_settings
from mnist_diffusion.distill import CONSISTENCY_INTERVALS, HUBER_C, ConsistencyDistiller, Distiller, Legs
from mnist_diffusion.sampling import Denoiser, timesteps_for
from mnist_diffusion.schedule import NoiseSchedule
from mnist_diffusion.solvers import sample_consistency

from conftest import run_cli

SCHEDULE = NoiseSchedule(DiffusionConfig(num_timesteps=1000))
WALK = SampleConfig(precision="fp32")  # the default walk, in exact arithmetic for the formulas
CPU = torch.device("cpu")


class DriftingPoint(torch.nn.Module):
    """An exact denoiser whose clean image is `point * (1 + drift * t / 1000)` at timestep t: with
    drift 0 the denoiser of data that is one image (every guided mix of it is itself, so it is its
    own consistency function); with drift > 0 its clean image changes along the walk by a known
    amount. `drift` is a parameter, so gradients through the clean image can be read."""

    def __init__(self, point: torch.Tensor, drift: float = 0.0) -> None:
        super().__init__()
        self.config = preset("tiny")
        self.point = point
        self.drift = torch.nn.Parameter(torch.tensor(drift))

    def clean(self, t: torch.Tensor) -> torch.Tensor:
        return self.point * (1 + self.drift * t.view(-1, 1, 1, 1) / 1000)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        alpha, sigma = SCHEDULE.alpha_sigma(t, x)
        return (x - alpha * self.clean(t)) / sigma


def images(seed: int, num: int = 1) -> torch.Tensor:
    return torch.rand(num, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 1.2 - 0.6  # inside [-1, 1]


def pseudo_huber(difference: torch.Tensor) -> torch.Tensor:
    """Song & Dhariwal (2023), sec. 3.3: sqrt(|d|^2 + c^2) - c per row."""
    return (difference.flatten(1).pow(2).sum(1) + HUBER_C ** 2).sqrt() - HUBER_C


def test_the_grid_is_the_default_walks_spacing_and_end_at_finer_steps() -> None:
    legs = Legs.consistency(SCHEDULE, WALK, CONSISTENCY_INTERVALS)
    assert legs.student == timesteps_for(dataclasses.replace(WALK, steps=CONSISTENCY_INTERVALS), SCHEDULE).tolist()
    assert len(legs.student) == CONSISTENCY_INTERVALS
    assert legs.student[0] == 999 and legs.student[-1] == WALK.last_timestep
    assert set(timesteps_for(WALK, SCHEDULE).tolist()) <= set(legs.student)  # the default walk's points are on it
    assert legs.teacher == [[t] for t in legs.student]


@pytest.mark.parametrize("leg", [0, 7, CONSISTENCY_INTERVALS - 2])
def test_an_inner_point_learns_the_students_own_clean_image_where_the_teacher_lands(leg: int) -> None:
    """Teacher and student exact for one image, the student's drifting with t: the teacher's DDIM step
    stays on the image's flow, so the target is the student's clean image at the next grid point and
    the loss is the pseudo-Huber distance of point * drift * (t_k - t_k+1) / 1000."""
    point = images(0)
    distiller = ConsistencyDistiller(DriftingPoint(point), SCHEDULE, 4, CPU, WALK)
    student = DriftingPoint(point, drift=0.5)
    rows = torch.full((3,), leg)
    noise = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(2))
    loss = distiller.loss(student, point.expand(3, -1, -1, -1), torch.tensor([0, 5, 10]), rows, noise)
    here, there = distiller.legs.student[leg], distiller.legs.student[leg + 1]
    torch.testing.assert_close(loss, pseudo_huber(point * 0.5 * (here - there) / 1000).squeeze(), rtol=1e-3, atol=1e-6)
    assert distiller.loss(DriftingPoint(point), point.expand(3, -1, -1, -1), None, rows, noise) < 1e-4


def test_the_last_point_learns_the_teachers_clean_image() -> None:
    """At the walk's end the target is the teacher's clean image (the boundary that anchors the chain):
    a student exact for another image is off by the two images' difference."""
    teacher_point, student_point = images(0), images(1)
    distiller = ConsistencyDistiller(DriftingPoint(teacher_point), SCHEDULE, 4, CPU, WALK)
    rows = torch.full((2,), CONSISTENCY_INTERVALS - 1)
    noise = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    loss = distiller.loss(DriftingPoint(student_point), teacher_point.expand(2, -1, -1, -1), None, rows, noise)
    torch.testing.assert_close(loss, pseudo_huber(student_point - teacher_point).squeeze(), rtol=1e-4, atol=1e-6)


def test_no_gradient_flows_through_the_target() -> None:
    """d loss / d drift comes from the prediction alone: (f_k - f_k+1) . df_k/d drift / (loss + c), with
    df_k/d drift = point * t_k / 1000; through the target too it would be (t_k - t_k+1) / 1000."""
    point, leg = images(0), 3
    distiller = ConsistencyDistiller(DriftingPoint(point), SCHEDULE, 4, CPU, WALK)
    student = DriftingPoint(point, drift=0.5)
    noise = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    loss = distiller.loss(student, point, None, torch.tensor([leg]), noise)
    loss.backward()
    here, there = distiller.legs.student[leg], distiller.legs.student[leg + 1]
    difference = point * 0.5 * (here - there) / 1000
    expected = (difference * point * here / 1000).sum() / (loss.detach() + HUBER_C)
    torch.testing.assert_close(student.drift.grad, expected, rtol=1e-3, atol=1e-7)


def test_the_target_is_clamped_to_the_range_the_walk_draws() -> None:
    """The student's clean image is clamped where the walk clamps it ([-1, 1]), so a student that
    overshoots the range learns the clamped image, as it is drawn."""
    point = torch.full((1, 1, 28, 28), 0.9)
    distiller = ConsistencyDistiller(DriftingPoint(point), SCHEDULE, 4, CPU, WALK)
    student = DriftingPoint(point, drift=0.5)  # 0.9 * (1 + t / 2000) > 1 from t = 223
    leg = distiller.legs.student.index(380)  # the next point, 326, overshoots too
    noise = torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    loss = distiller.loss(student, point, None, torch.tensor([leg]), noise)
    there = distiller.legs.student[leg + 1]
    target = student.clean(torch.tensor([there])).detach()
    assert float(target.max()) > 1.04
    target = target.clamp(-1, 1)
    torch.testing.assert_close(loss, pseudo_huber(student.clean(torch.tensor([380])) - target).squeeze(),
                               rtol=1e-3, atol=1e-6)


def test_multistep_consistency_sampling_noises_each_clean_image_afresh() -> None:
    """Song et al. (2023) Algorithm 1: each step's x is sqrt(abar) x0_hat + sqrt(1 - abar) z with z the
    generator's next draw; the last returns x0_hat."""
    point, seen = images(0), []
    denoise = Denoiser(DriftingPoint(point, drift=0.3), SCHEDULE, None, 1.0, True, (0.3, 0.7), "fp32")
    timesteps = timesteps_for(student_settings(4, "consistency"), SCHEDULE)
    start = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    drawn = sample_consistency(denoise, start, timesteps, SCHEDULE, generator=torch.Generator().manual_seed(9),
                               callback=seen.append)
    replay = torch.Generator().manual_seed(9)
    for step, next_t in zip(seen, [*timesteps.tolist()[1:], None], strict=True):
        clean = DriftingPoint(point, 0.3).clean(torch.tensor([step["t"]])).detach().expand(2, -1, -1, -1)
        torch.testing.assert_close(step["x0"], clean, rtol=1e-4, atol=1e-4)  # x0 from eps at alpha near 0
        if next_t is not None:
            abar = float(SCHEDULE.alphas_cumprod64[next_t])
            expected = abar ** 0.5 * clean + (1 - abar) ** 0.5 * torch.randn(2, 1, 28, 28, generator=replay)
            torch.testing.assert_close(step["x"], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(drawn, seen[-1]["x0"])


def test_a_model_config_names_only_a_students_sampler() -> None:
    assert ModelConfig(student_steps=2, student_sampler="consistency").student_sampler == "consistency"
    with pytest.raises(ValueError, match="student_sampler must be one of ddim, consistency"):
        ModelConfig(student_steps=2, student_sampler="unipc")


def test_a_consistency_student_draws_all_in_the_precision_asked_and_a_progressive_one_starts_in_fp32() -> None:
    assert student_settings(4, "consistency").fp32_from is None
    assert student_settings(4, "ddim").fp32_from == 1.0


def test_a_consistency_student_cannot_teach() -> None:
    teacher = DriftingPoint(images(0))
    teacher.config = preset("tiny", student_steps=2, student_sampler="consistency")

    class Saved:  # the parts of a checkpoint Distiller.of reads
        model_config, diffusion_config = teacher.config, DiffusionConfig(num_timesteps=1000)

        def build_model(self) -> torch.nn.Module:
            return teacher

    with pytest.raises(ValueError, match="a consistency student cannot teach"):
        Distiller.of(Saved(), preset("tiny", student_steps=1), DiffusionConfig(num_timesteps=1000), CPU)


def test_the_command_line_distils_a_consistency_student_and_draws_it_in_any_steps(
        tmp_path: Path, tiny_checkpoint: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--run-dir", str(run), "--teacher", str(tiny_checkpoint),
                           "--distillation", "consistency", "--student-steps", "2", "--max-steps", "1",
                           "--batch-size", "16", "--data-root", str(mnist_root), "--device", "cpu")
    assert code == 0, err
    assert "--sampler consistency --steps 2 --guidance 1 unless" in err  # all in bf16: no --fp32-from
    student = next((run / "checkpoints").glob("*.safetensors"))
    config = load_checkpoint(student).model_config
    assert (config.student_steps, config.student_sampler) == (2, "consistency")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(student), "--digits", "3", "--per-digit", "2",
                           "--out", str(tmp_path / "g.png"))
    assert code == 0 and "2 steps, 1 branch = 2 network passes per digit" in err, err
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(student), "--digits", "3", "--per-digit", "2",
                           "--steps", "5", "--out", str(tmp_path / "g5.png"))
    assert code == 0 and "5 steps, 1 branch = 5 network passes per digit" in err, err


def test_distillation_without_a_teacher_is_refused_in_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path / "run"), "--max-steps", "1",
                           "--distillation", "consistency")
    assert code != 0 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "--distillation sets what a distillation learns" in err, err
