"""One row of a paired sampling comparison: the same model, seed and labels under different settings,
scored as `mnist-diffusion evaluate` scores, with the pixel statistics the quality targets name."""

from __future__ import annotations

import time

import torch
from torch import nn

from mnist_diffusion.config import SampleConfig
from mnist_diffusion.data import to_uint8
from mnist_diffusion.evaluate import Evaluator
from mnist_diffusion.pipeline import Pipeline


def paired_row(pipe: Pipeline, evaluator: Evaluator, settings: SampleConfig, num: int, *, seed: int = 0,
               guide: nn.Module | None = None) -> dict:
    """`num` digits (an even mix, 0-9 in order) drawn from `seed` with `settings`, and their scores:
    FID, precision, recall, coverage, read as asked, exact-zero and pure-white pixels, digits in more
    than one piece of ink, passes per digit and seconds to generate."""
    labels = torch.arange(num) % pipe.num_classes
    started = time.perf_counter()
    images = to_uint8(pipe.generate(num, labels, settings, torch.Generator().manual_seed(seed), guide=guide))
    seconds = time.perf_counter() - started
    row, _ = evaluator.score("model", images, labels, memorize=False)
    return {"date": time.strftime("%Y-%m-%d"), "num": num, "seed": seed, "fid": row.fid, "precision": row.precision,
            "recall": row.recall, "coverage": row.coverage, "acc": row.conditional_accuracy, "zero": row.zero_pixels,
            "stray": row.stray_ink, "white": (images == 255).double().mean().item(),
            "passes": pipe.passes(settings, True), "gen_s": round(seconds)}
