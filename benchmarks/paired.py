"""One row of a paired sampling comparison: the same model, seed and labels under different settings,
scored as `mnist-diffusion evaluate` scores, with the pixel statistics the quality targets name."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from report import markdown_table
from torch import nn

from mnist_diffusion.config import SampleConfig
from mnist_diffusion.data import to_uint8
from mnist_diffusion.evaluate import Evaluator, stray_ink_share, white_pixel_share, zero_pixel_share
from mnist_diffusion.pipeline import Pipeline

RESULTS = Path(__file__).parent / "results"
WEIGHTS = Path(__file__).parent.parent / "src" / "mnist_diffusion" / "weights" / "default.safetensors"


def shipped_name() -> str:
    """'shipped ' and the first 8 hex digits of the shipped weights' sha256: rows of different models stay apart."""
    return "shipped " + hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:8]


def paired_row(pipe: Pipeline, evaluator: Evaluator, settings: SampleConfig, num: int, *, seed: int = 0,
               guide: nn.Module | None = None, guide_weight: float | None = None,
               guide_below: float | None = None, eta: float | None = None,
               noise_below: float | None = None) -> dict:
    """`num` digits (an even mix, 0-9 in order) drawn from `seed` with `settings` (and autoguidance's
    `guide`, a stochastic sampler's `eta` and `noise_below`: see `Pipeline.generate`), and their
    scores: FID, precision, recall, coverage, read as asked, exact-zero and pure-white pixels, digits in
    more than one piece of ink, passes per digit and seconds to generate."""
    labels = torch.arange(num) % pipe.num_classes
    started = time.perf_counter()
    images = to_uint8(pipe.generate(num, labels, settings, torch.Generator().manual_seed(seed), guide=guide,
                                    guide_weight=guide_weight, guide_below=guide_below, eta=eta,
                                    noise_below=noise_below))
    seconds = time.perf_counter() - started
    row, _ = evaluator.score("model", images, labels, memorize=False)
    return {"date": time.strftime("%Y-%m-%d"), "num": num, "seed": seed, "sampler": settings.sampler,
            "floor": settings.log_snr_floor, "w": settings.guidance,
            "steps": pipe.steps_for(settings), "last_timestep": pipe.last_timestep(settings), "fid": row.fid,
            "precision": row.precision, "recall": row.recall, "coverage": row.coverage,
            "acc": row.conditional_accuracy, "zero": row.zero_pixels, "stray": row.stray_ink,
            "white": white_pixel_share(images), "passes": pipe.passes(settings, True),
            "gen_s": round(seconds)}


def reference(test_images: torch.Tensor) -> dict[str, float]:
    """MNIST test digits' exact-zero and pure-white pixel shares and digits in several pieces."""
    return {"zero": zero_pixel_share(test_images), "white": white_pixel_share(test_images),
            "stray": stray_ink_share(test_images)}


SCORE_HEADER = ["FID", "precision", "recall", "coverage", "read as asked", "zero px", "white px", "several pieces",
                "generate s"]


def score_cells(row: dict) -> list:
    """The cells under `SCORE_HEADER` for a row of `paired_row`."""
    return [f"{row['fid']:.3f}", f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['coverage']:.3f}",
            f"{100 * row['acc']:.2f}%", f"{100 * row['zero']:.1f}%", f"{100 * row['white']:.1f}%",
            f"{100 * row['stray']:.1f}%", row["gen_s"]]


def mnist_sentence(mnist: dict[str, float]) -> str:
    """What `reference` measured, as a sentence for a report's introduction."""
    return (f"MNIST's test digits: {100 * mnist['zero']:.1f}% exact-zero pixels, {100 * mnist['white']:.1f}% pure "
            f"white, {100 * mnist['stray']:.1f}% in more than one piece of ink.")


def parser(doc: str, out: str, seeds: str | None = None) -> argparse.ArgumentParser:
    """The options every paired comparison takes: --num, --data-root, --out (default `results/<out>`),
    and --seeds (default `seeds`) when the comparison draws each arm from several seeds."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=10_000, help="digits per arm")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(RESULTS / out), help="OUT.jsonl gains the rows, OUT.md is rewritten")
    if seeds is not None:
        parser.add_argument("--seeds", default=seeds, help="sampling seeds each arm is drawn from, comma-separated")
    return parser


def append(out: str | Path, row: dict) -> list[dict]:
    """Add `row` to OUT.jsonl (one JSON object per line) and return every row it holds."""
    with open(Path(out).with_suffix(".jsonl"), "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
    return rows(out)


def rows(out: str | Path) -> list[dict]:
    """Every row of OUT.jsonl."""
    log = Path(out).with_suffix(".jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def write_table(out: str | Path, title: str, intro: str, header: list[str], table: list[list]) -> None:
    path = Path(out).with_suffix(".md")
    path.write_text("\n".join([f"# {title}", "", intro, "", *markdown_table(header, table)]) + "\n")
    print(f"wrote {path}")


def walk(row: dict) -> str:
    """A row's sampler and where its walk ends, e.g. 'unipc to t = 25'. Rows written before these were
    recorded (2026-12-02 and earlier) were all drawn by dpm++2m ending at t = 12, the default then."""
    return f"{row.get('sampler', 'dpm++2m')} to t = {row.get('last_timestep', 12)}"


def short(model: str) -> str:
    """A checkpoint path cut to its run and file (`bf16-2cores/curve/min_060.0`), or the name as given."""
    path = Path(model)
    return "/".join(path.with_suffix("").parts[-3:]) if path.suffix == ".safetensors" else model


def write_scores(out: str | Path, title: str, intro: str, columns: list[str], lead: Callable[[dict], list]) -> None:
    """OUT.md: every row of OUT.jsonl, its `columns` (from `lead`) then the scores."""
    write_table(out, title, intro, [*columns, *SCORE_HEADER], [[*lead(r), *score_cells(r)] for r in rows(out)])
