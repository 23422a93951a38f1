"""Distilling a sampling walk into fewer network passes (Salimans & Ho 2022, "Progressive
Distillation for Fast Sampling of Diffusion Models"; guided teachers: Meng et al. 2023).

The teacher is a trained model walked as it is drawn by default (`model_defaults`: the product's
sampler and steps, guidance on its interval, two branches where guided). The student has the
teacher's architecture, starts from its weights, and learns to cover with one DDIM step (Song et al.
2021, eq. 12, deterministic) what the teacher's walk does between two points of a coarser grid, the
guidance included, so every student step is one pass of the conditional branch. The student's
`ModelConfig.student_steps` says so, and it is drawn with its own walk, `student_settings(steps)`
(`--sampler ddim --steps N --guidance 1 --fp32-from 1`). A student can teach in turn (8 -> 4 -> 2, as in the
paper): its legs are then walked with its own first-order DDIM steps.

One training row (Salimans & Ho 2022, Algorithm 2, for one leg of the walk):
- a training digit x and noise eps give z = alpha_s x + sigma_s eps at the student's grid point s;
- the teacher walks from z through its own timesteps between s and the next student point n
  (DPM-Solver++(2M) steps, `_dpm_pp_2m_step`), landing at z_n; on the last leg it returns its
  clean-image estimate instead;
- the student's prediction (x_hat, eps_hat) at (z, s) lands at alpha_n x_hat + sigma_n eps_hat, and
  the loss is that landing's distance to z_n in units of sigma_n (where the next steps start from);
  on the last leg, the distance of x_hat to the teacher's clean image in units of sigma_s / alpha_s
  (the epsilon MSE the teacher was trained with).
The student learns at noised training images, not along its own trajectories, as in the paper.
A student draws its first step, from pure noise, in fp32 (`STUDENT_FP32_FROM`); it is trained under
the run's precision throughout.

Consistency distillation (Song et al. 2023, "Consistency Models", Algorithm 2; the guided teacher of
Luo et al. 2023, "Latent Consistency Models") is the other method (`ModelConfig.student_sampler =
"consistency"`, `train --distillation consistency`). Its student learns one function, the end of the
teacher's walk from any point of it, so it draws in any number of steps (`solvers.sample_consistency`).
On a grid of `CONSISTENCY_INTERVALS` timesteps spaced and ended as the teacher's walk, a row at grid
point k (`ConsistencyDistiller.loss`):
- z = alpha_k x + sigma_k eps; the teacher takes one DDIM step from z to the next point, z';
- the student's clean image at (z, k) learns its own at (z', k + 1), without gradient through the
  target (the target network is the student itself, as in Song & Dhariwal 2023, "Improved Techniques
  for Training Consistency Models"), by their pseudo-Huber distance (same paper, sec. 3.3);
- at the last point, the walk's end, it learns the teacher's clean image there: the boundary condition
  that anchors the chain (the paper's f(x, eps) = x, at the point where the product's walk stops).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .checkpoint import Checkpoint, load_checkpoint
from .config import (
    MAX_STUDENT_STEPS,
    STUDENT_SAMPLERS,
    DiffusionConfig,
    ModelConfig,
    SampleConfig,
    model_defaults,
    student_settings,
)
from .devices import resolve_precision
from .sampling import Denoiser, timesteps_for
from .schedule import NoiseSchedule
from .solvers import _batched, _dpm_pp_2m_step

SHIPPED = "shipped"  # `--teacher shipped`: the model the package ships


def load_teacher(name: str) -> Checkpoint:
    """The teacher `--teacher` names: the shipped model, or a checkpoint written by this package."""
    return load_checkpoint(None if name == SHIPPED else name)


CONSISTENCY = STUDENT_SAMPLERS[1]  # a consistency student's sampler, and its distillation's name
# The grid a consistency student learns on: each teacher step covers 1/20 of the walk, fine enough for
# one DDIM step (Luo et al. 2023 skip 20 of 1000 timesteps), few enough links for the boundary to reach
# the top of the chain in a few thousand training steps.
CONSISTENCY_INTERVALS = 20
# Pseudo-Huber's c for a 28x28 image in [-1, 1]: 0.00054 sqrt(784) (Song & Dhariwal 2023, sec. 3.3).
HUBER_C = 0.00054 * 784 ** 0.5


def student_flags(model: ModelConfig) -> str:
    """A student's own walk (`model_defaults`) as the command line's flags."""
    walk = model_defaults(model)
    fp32 = "" if walk.fp32_from is None else f" --fp32-from {walk.fp32_from:g}"
    return f"--sampler {walk.sampler} --steps {walk.steps} --guidance {walk.guidance:g}{fp32}"


def _network(config: ModelConfig) -> ModelConfig:
    """`config` with what marks a student cleared: the network alone, which teacher and student share."""
    return dataclasses.replace(config, student_steps=0, student_sampler=STUDENT_SAMPLERS[0])


@dataclass(frozen=True)
class Legs:
    """The student's grid and, for each of its steps, the teacher's timesteps that step covers.

    `student[k]` is where student step k starts (descending, the last one the walk's last timestep);
    `teacher[k]` the teacher's evaluation points of that leg, `student[k]` first, then the teacher's
    own timesteps strictly between `student[k]` and `student[k + 1]` (on the last leg: every teacher
    timestep below it), so each leg is walked as finely as the teacher's default walk.
    """

    student: list[int]
    teacher: list[list[int]]

    @classmethod
    def build(cls, schedule: NoiseSchedule, student_steps: int, teacher: SampleConfig) -> Legs:
        grid = timesteps_for(student_settings(student_steps), schedule).tolist()
        walk = timesteps_for(teacher, schedule).tolist()
        bounds = [*grid[1:], -1]
        legs = [[start, *(t for t in walk if below < t < start)] for start, below in zip(grid, bounds, strict=True)]
        return cls(grid, legs)

    @classmethod
    def consistency(cls, schedule: NoiseSchedule, teacher: SampleConfig, intervals: int) -> Legs:
        """A consistency student's grid: `intervals` timesteps spaced and ended as the teacher's walk,
        each leg one teacher step to the next point."""
        grid = timesteps_for(dataclasses.replace(teacher, steps=intervals), schedule).tolist()
        return cls(grid, [[t] for t in grid])


def teacher_landing(denoise: Denoiser, z: torch.Tensor, points: list[int], land: int | None,
                    schedule: NoiseSchedule, second_order: bool = True) -> torch.Tensor:
    """Walk the teacher from `z` at `points[0]` through `points` with DPM-Solver++(2M) steps (first-order
    ones, which are DDIM's, unless `second_order`) and return where it lands at timestep `land`, or,
    when `land` is None, its clean-image estimate at the last point."""
    levels = [*schedule.alphas_cumprod64[points].tolist(),
              1.0 if land is None else float(schedule.alphas_cumprod64[land])]
    x, previous_x0, previous_h = z, None, 0.0
    for i, t in enumerate(points):
        x0, _ = denoise(x, _batched(t, x))
        if land is None and i == len(points) - 1:
            return x0
        x, h = _dpm_pp_2m_step(x, x0, previous_x0, previous_h, levels[i], levels[i + 1])
        previous_x0, previous_h = (x0, h) if second_order else (None, 0.0)
    return x


class Distiller:
    """The teacher, its walk and the student's legs: `loss(student, x0, labels, legs, noise)` is one
    batch's distillation loss. `labels` holds the null label (index `num_classes`) where the row is
    unconditional; such rows learn the teacher's unconditional walk, so the student still draws
    without a class. `walk` is how the teacher is walked (default: its own, `model_defaults`)."""

    def __init__(self, teacher: nn.Module, schedule: NoiseSchedule, student_steps: int,
                 device: torch.device, walk: SampleConfig | None = None) -> None:
        self.teacher = teacher.to(device).eval().requires_grad_(False)
        self.schedule, self.walk = schedule, walk or model_defaults(teacher.config)  # type: ignore[arg-type]
        self.second_order = self.walk.sampler != STUDENT_SAMPLERS[0]
        self.legs = self._legs(student_steps)
        self.precision = resolve_precision(self.walk.precision, device)
        self.num_classes = getattr(teacher.config, "num_classes", 0)  # type: ignore[union-attr]

    @classmethod
    def of(cls, teacher: Checkpoint, model_config: ModelConfig, diffusion_config: DiffusionConfig,
           device: torch.device) -> Distiller:
        """The distiller of a run whose student has `model_config`; `ValueError` unless it is a student
        (`student_steps` >= 1) of the teacher's network and schedule (a resumed run may meet another)."""
        if model_config.student_steps < 1:
            raise ValueError(f"a distillation needs the student's steps: student_steps from 1 to {MAX_STUDENT_STEPS} "
                             f"in its model config (--student-steps)")
        if (_network(teacher.model_config), teacher.diffusion_config) != (_network(model_config), diffusion_config):
            raise ValueError("the teacher's network or noise schedule is not the student's: a student is distilled "
                             "from the model it started as (resume with the --teacher the run began with)")
        if teacher.model_config.student_sampler == CONSISTENCY and teacher.model_config.student_steps:
            raise ValueError("a consistency student cannot teach: its walk draws fresh noise at each step, so it "
                             "follows no path a student could learn to shorten")
        method = ConsistencyDistiller if model_config.student_sampler == CONSISTENCY else Distiller
        return method(teacher.build_model(), NoiseSchedule(diffusion_config), model_config.student_steps, device)

    @classmethod
    def for_run(cls, teacher_name: str, resumed: bool, model_config: ModelConfig, diffusion_config: DiffusionConfig,
                device: torch.device) -> tuple[Distiller, ModelConfig, DiffusionConfig, dict[str, torch.Tensor] | None]:
        """A training run's distiller, the student's configs and the weights it starts from. A fresh student
        is its teacher's network and schedule with `model_config.student_steps`, whatever else the flags said,
        and starts from the teacher's (EMA) weights; a resumed one keeps its own configs and weights (None)."""
        teacher = load_teacher(teacher_name)
        if not resumed:
            model_config = dataclasses.replace(teacher.model_config, student_steps=model_config.student_steps,
                                               student_sampler=model_config.student_sampler)
            diffusion_config = teacher.diffusion_config
        start = None if resumed else teacher.weights()
        return cls.of(teacher, model_config, diffusion_config, device), model_config, diffusion_config, start

    def _legs(self, student_steps: int) -> Legs:
        """The legs the student learns: one per step of its walk."""
        return Legs.build(self.schedule, student_steps, self.walk)

    @property
    def num_legs(self) -> int:
        return len(self.legs.student)

    @torch.no_grad()
    def targets(self, z: torch.Tensor, labels: torch.Tensor | None, leg: int) -> torch.Tensor:
        """The teacher's landing point (or clean image, on the last leg) from `z` at the leg's start."""
        land = self.legs.student[leg + 1] if leg + 1 < self.num_legs else None
        out = torch.empty_like(z)
        conditional = (labels < self.num_classes if labels is not None
                       else torch.zeros(len(z), dtype=torch.bool, device=z.device))
        for rows, given in ((conditional, True), (~conditional, False)):
            if rows.any():
                denoise = Denoiser(self.teacher, self.schedule, labels[rows] if given else None,  # type: ignore[index]
                                   self.walk.guidance, True, self.walk.guidance_interval, self.precision,
                                   fp32_from=self.walk.fp32_from)
                out[rows] = teacher_landing(denoise, z[rows], self.legs.teacher[leg], land, self.schedule,
                                            self.second_order)
        return out

    def noised_and_targets(self, x0: torch.Tensor, labels: torch.Tensor | None, legs: torch.Tensor,
                           noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row's leg start `(B,)`, the row noised there `(B, C, H, W)`, and the teacher's target from
        there (`targets`)."""
        starts = torch.tensor(self.legs.student, device=x0.device)[legs]  # (B,)
        z = self.schedule.q_sample(x0, starts, noise)
        target = torch.empty_like(z)
        for leg in legs.unique().tolist():
            rows = legs == leg
            target[rows] = self.targets(z[rows], labels[rows] if labels is not None else None, leg)
        return starts, z, target

    def loss(self, student: nn.Module, x0: torch.Tensor, labels: torch.Tensor | None, legs: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        """Mean over rows of each row's landing error (see the module's docstring). x0, noise `(B, C, H, W)`;
        legs `(B,)` ints in [0, num_legs); labels `(B,)` or None."""
        starts, z, target = self.noised_and_targets(x0, labels, legs, noise)
        x_hat, eps_hat = self.schedule.to_x0_eps(z, starts, student(z, starts, labels).float())
        landing = torch.tensor([*self.legs.student[1:], 0], device=x0.device)[legs]
        alpha_n, sigma_n = self.schedule.alpha_sigma(landing, z)
        alpha_s, sigma_s = self.schedule.alpha_sigma(starts, z)
        last = (legs == self.num_legs - 1).view(-1, 1, 1, 1)
        step_error = (alpha_n * x_hat + sigma_n * eps_hat - target) / sigma_n
        clean_error = (x_hat - target) * alpha_s / sigma_s
        return torch.where(last, clean_error, step_error).pow(2).flatten(1).mean(1).mean()


class ConsistencyDistiller(Distiller):
    """Consistency distillation (see the module's docstring): the same teacher and rows as `Distiller`, on
    the grid `Legs.consistency`; `student_steps` is only how the student is drawn unless told otherwise."""

    def __init__(self, teacher: nn.Module, schedule: NoiseSchedule, student_steps: int,
                 device: torch.device, walk: SampleConfig | None = None,
                 intervals: int = CONSISTENCY_INTERVALS) -> None:
        self.intervals = intervals
        super().__init__(teacher, schedule, student_steps, device, walk)
        self.black = teacher.config.black  # type: ignore[union-attr]

    def _legs(self, student_steps: int) -> Legs:
        return Legs.consistency(self.schedule, self.walk, self.intervals)

    def clean_image(self, student: nn.Module, z: torch.Tensor, t: torch.Tensor,
                    labels: torch.Tensor | None) -> torch.Tensor:
        """The student's clean-image estimate at `(z, t)`, the consistency function it learns."""
        return self.schedule.to_x0_eps(z, t, student(z, t, labels).float())[0]

    def loss(self, student: nn.Module, x0: torch.Tensor, labels: torch.Tensor | None, legs: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
        """Mean over rows of the pseudo-Huber distance between the student's clean image at the row's grid
        point and its target: its own clean image (no gradient, clamped as the walk clamps it) where the
        teacher's step lands, or, at the last point, the teacher's clean image. Shapes as `Distiller.loss`."""
        starts, z, landing = self.noised_and_targets(x0, labels, legs, noise)
        goal = landing.clone()
        inner = legs < self.num_legs - 1
        if inner.any():
            next_points = torch.tensor(self.legs.student[1:], device=x0.device)[legs[inner]]
            with torch.no_grad():
                rows_labels = labels[inner] if labels is not None else None
                own = self.clean_image(student, landing[inner], next_points, rows_labels)
                goal[inner] = own.clamp(self.black, 1.0)
        error = (self.clean_image(student, z, starts, labels) - goal).flatten(1)
        return ((error.pow(2).sum(1) + HUBER_C ** 2).sqrt() - HUBER_C).mean()
