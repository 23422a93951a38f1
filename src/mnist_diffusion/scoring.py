"""Scoring a model as `mnist-diffusion evaluate` does, for the command line, the benchmarks and Python.

    draw_for_scoring  N digits of a pipeline in an even mix of the classes, and the settings used
    reference_rows    the floor (10,000 training digits), the copy reference and uniform noise
    score             the model's row beside the references, written as report.json / report.md
                      and a figure of the samples nearest to training digits
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .config import ALL_STEPS, SampleConfig
from .data import to_uint8
from .devices import resolve_precision
from .evaluate import Evaluator, Memorization, ScoreRow, fid, write_report
from .sampling import Callback

FLOOR_COUNT = 10_000  # training digits in the floor row: what a perfect generator reaches at that N


def read_samples(path: str | Path, max_images: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images `(N, 28, 28)` and optional int64 labels `(N,)` from an .npz, checked whole for
    scoring (`evaluate.check_samples`) before any work."""
    from .evaluate import check_samples
    from .files import InputFileError
    from .inputs import read_npz_digits

    images, labels = read_npz_digits(path, "--samples", max_images=max_images, allow_channel_axis=True,
                                     first_array_as_images=True)
    try:
        check_samples(images, labels)
    except ValueError as error:
        raise InputFileError(f"--samples {path}: {error}") from None
    return images, labels


@dataclass
class Drawn:
    """Digits drawn for scoring: uint8 `(N, 28, 28)`, the labels asked for, the row's name and the
    settings to record in the report."""

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    settings: dict[str, Any]


def scoring_labels(num: int, num_classes: int, guidance: float) -> torch.Tensor | None:
    """An even mix of the classes in order (0, 1, ..., 9, 0, ...), or None (unconditional)."""
    return torch.arange(num) % num_classes if num_classes and guidance > 0 else None


def row_name(settings: SampleConfig, steps: int, conditional: bool) -> str:
    interval = settings.guidance_interval
    where = f" on t/T {interval[0]:g}-{interval[1]:g}" if interval != ALL_STEPS and conditional else ""
    guided = f", w={settings.guidance:g}{where}" if conditional else ", unconditional"
    return f"model ({settings.sampler}, {steps} steps{guided})"


def draw_for_scoring(pipe, num: int, settings: SampleConfig, *, seed: int = 0, callback: Callback = None,
                     checkpoint_name: str = "shipped default", ema: bool = True) -> Drawn:
    """`num` digits of `pipe` (a `Pipeline`) with `settings`, in an even mix of its classes."""
    labels = scoring_labels(num, pipe.num_classes, settings.guidance)
    steps = pipe.steps_for(settings)
    started = time.monotonic()
    images = pipe.generate(num, labels, settings, torch.Generator().manual_seed(seed), callback=callback)
    recorded = {"checkpoint": checkpoint_name, "sampler": settings.sampler, "steps": steps,
                "network_passes_per_digit": pipe.passes(settings, labels is not None), "guidance": settings.guidance,
                "guidance_interval": settings.guidance_interval, "last_timestep": pipe.last_timestep(settings),
                "seed": seed, "ema": ema, "precision": resolve_precision(settings.precision, pipe.device),
                **settings.sampler_kwargs(), "generation_s": round(time.monotonic() - started, 1)}
    return Drawn(to_uint8(images), labels, row_name(settings, steps, labels is not None), recorded)


def reference_sets(train_images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`FLOOR_COUNT` training digits and as many uniform-noise images, drawn with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    training_sample = train_images[torch.randperm(len(train_images), generator=generator)[:FLOOR_COUNT]]
    noise = torch.randint(0, 256, (len(training_sample), 28, 28), generator=generator, dtype=torch.uint8)
    return training_sample, noise


def reference_rows(evaluator: Evaluator, train_images: torch.Tensor, test_images: torch.Tensor,
                   seed: int, reference: str = "MNIST") -> list[ScoreRow]:
    training_sample, noise = reference_sets(train_images, seed)
    floor = "10k" if len(training_sample) == FLOOR_COUNT else f"{len(training_sample):,}"
    held_out = "test" if reference == "MNIST" else "held out"
    return [evaluator.score(f"{reference} train {floor} (floor)", training_sample, memorize=False)[0],
            evaluator.score(f"{reference} {held_out} (copy reference)", test_images, distribution=False)[0],
            evaluator.score("uniform noise", noise)[0]]


def add_inception_fid(rows: list[ScoreRow], images: torch.Tensor, train_images: torch.Tensor,
                      test_images: torch.Tensor, seed: int, with_references: bool) -> None:
    """Standard Inception FID of the model's row (and the floor's) against the test set (slow on a CPU)."""
    from .inception import inception_features, load_inception

    network = load_inception()
    reference = inception_features(network, test_images)
    rows[0].inception_fid = fid(inception_features(network, images), reference)
    if with_references:
        rows[1].inception_fid = fid(inception_features(network, reference_sets(train_images, seed)[0]), reference)


@dataclass
class Report:
    rows: list[ScoreRow]
    copies: Memorization
    settings: dict[str, Any]
    paths: tuple[Path, ...]


def score(drawn: Drawn, evaluator: Evaluator, train_images: torch.Tensor, test_images: torch.Tensor,
          out_dir: str | Path, *, seed: int = 0, references: bool = True, inception: bool = False,
          reference: str = "MNIST") -> Report:
    """Score `drawn` beside the reference rows; write report.json, report.md and nearest_neighbours.png.
    `reference` names the data (`test_images` its held-out images, `train_images` what was trained on)."""
    from .figures import nearest_neighbours_figure

    out_dir = Path(out_dir)
    started = time.monotonic()
    row, copies = evaluator.score(drawn.name, drawn.images, drawn.labels)
    rows = [row] + (reference_rows(evaluator, train_images, test_images, seed, reference) if references else [])
    if inception:
        add_inception_fid(rows, drawn.images, train_images, test_images, seed, references)
    settings = drawn.settings | {"scoring_s": round(time.monotonic() - started, 1)}
    if reference != "MNIST":
        settings["reference"] = f"the {len(test_images):,} held-out images of {reference}"
    json_path, md_path = write_report(rows, settings, out_dir)
    figure = nearest_neighbours_figure(drawn.images, train_images, copies, out_dir / "nearest_neighbours.png")
    return Report(rows, copies, settings, (json_path, md_path, figure))


def evaluator_for(data_root: str | Path = "data", classifier: str | Path | None = None,
                  download: bool = True) -> tuple[Evaluator, torch.Tensor, torch.Tensor]:
    """The evaluator against MNIST's test set (with the shipped classifier unless told), and the
    training and test images it was built from."""
    from .classifier import load_classifier
    from .data import load_mnist

    train_images, _ = load_mnist(data_root, "train", download=download)
    test_images, _ = load_mnist(data_root, "test", download=download)
    return Evaluator(load_classifier(classifier), test_images, train_images), train_images, test_images


def reference_images(data: str | None, checkpoint: str | Path | None, data_root: str | Path = "data",
                     download: bool = True) -> tuple[torch.Tensor, torch.Tensor, str]:
    """What a model is scored against: `(training images, held-out images, name)`. `data` names a
    source (`datasets.prepare`); None takes the data a checkpoint's run stored beside it
    (`RUN/data/`, for a checkpoint in `RUN/checkpoints/`), else MNIST's training and test digits."""
    from . import datasets
    from .data import load_mnist

    prepared = None
    if data not in (None, "mnist"):
        prepared = datasets.prepare(data, data_root=data_root)
    elif data is None and checkpoint is not None:
        prepared = datasets.load_stored(Path(checkpoint).parent.parent)
    if prepared is None:
        return (load_mnist(data_root, "train", download=download)[0], load_mnist(data_root, "test",
                                                                                 download=download)[0], "MNIST")
    from .evaluate import MIN_SAMPLES

    name = Path(str(prepared.manifest.get("source", "the data"))).name
    held_out = prepared.split(True)[0]
    if len(held_out) < MIN_SAMPLES:
        raise datasets.DataError(f"the held-out split of {name} has {len(held_out)} images; scoring needs at least "
                                 f"{MIN_SAMPLES} (about one image in ten is held out: give more images)")
    return prepared.split(False)[0], held_out, name


def evaluate_checkpoint(checkpoint: str | Path | None, num: int, out_dir: str | Path, *,
                        settings: SampleConfig | None = None, seed: int = 0, data_root: str | Path = "data",
                        device: str | None = "auto", references: bool = True) -> Report:
    """What `mnist-diffusion evaluate --checkpoint C --num N` does, as one call: draw, score, report."""
    from .pipeline import Pipeline

    pipe = Pipeline.load(checkpoint, device=device)
    evaluator, train_images, test_images = evaluator_for(data_root)
    drawn = draw_for_scoring(pipe, num, settings or pipe.defaults, seed=seed,
                             checkpoint_name=str(checkpoint) if checkpoint else "shipped default")
    return score(drawn, evaluator, train_images, test_images, out_dir, seed=seed, references=references)
