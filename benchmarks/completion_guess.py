"""Completion without a chosen digit: how often `completion.guess_digit` guesses the digit that erased
strokes begin, how steady the guess is across seeds, and what guessing first does to the completion.

    python benchmarks/completion_guess.py [--num 500] [--start 5000] [--masks lower,right,center]
                                          [--draws 1,2,4] [--no-complete]

Every input is what a user gives: the MNIST test digits START..START+NUM (the guess's noise levels
were chosen on the first 300, so these are unseen) with the masked region set to black. For each mask:
- the guess alone, with each number of noise draws per level, at seeds 0 and 1: how often it is the
  true digit, how often the two seeds disagree, its network passes per image; and, as a check that
  the guess cannot read what is erased, the guess (default draws) given the whole digit and the mask,
  which must agree with the erased input's guess on every digit;
- one RePaint completion each (seed 0) as whatever the strokes become (`--no-guess`) and as now
  (guess with the default draws, then complete as that digit, unguided), read by the shipped
  classifier: how often it reads the true digit, and the completions' precision in its feature space.
Writes benchmarks/results/completion_guess.{md,json}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from report import markdown_table, write_report

from mnist_diffusion import scoring
from mnist_diffusion.classifier import embed
from mnist_diffusion.completion import GUESS_DRAWS, GUESS_LEVELS, guess_digit, model_inputs, region_mask
from mnist_diffusion.data import load_mnist
from mnist_diffusion.devices import resolve_precision
from mnist_diffusion.pipeline import Pipeline

RESULTS = Path(__file__).parent / "results"


def guesses(pipe: Pipeline, pixels: torch.Tensor, keep: torch.Tensor, draws: int, seed: int) -> torch.Tensor:
    """`guess_digit` on uint8 digits `(N, 28, 28)` with keep-masks `(N, 28, 28)`, as `Pipeline.complete` calls it."""
    config = pipe.checkpoint.model_config
    images, mask = model_inputs(pixels, keep, config.image_size, config.black)
    return guess_digit(pipe.model, pipe.schedule, images, mask, draws=draws,
                       generator=torch.Generator().manual_seed(seed), max_batch=pipe.defaults.max_batch,
                       device=pipe.device, precision=resolve_precision(pipe.defaults.precision, pipe.device))


def guess_rows(pipe: Pipeline, mask: str, pixels: torch.Tensor, truth: torch.Tensor, draws: int) -> dict:
    keep = region_mask(mask).expand(len(pixels), 28, 28)
    erased = torch.where(keep, pixels, torch.zeros_like(pixels))
    started = time.perf_counter()
    first, second = guesses(pipe, erased, keep, draws, 0), guesses(pipe, erased, keep, draws, 1)
    seconds = (time.perf_counter() - started) / 2
    whole = guesses(pipe, pixels, keep, draws, 0) if draws == GUESS_DRAWS else None
    return {"mask": mask, "draws": draws, "right_seed0": (first == truth).double().mean().item(),
            "right_seed1": (second == truth).double().mean().item(),
            "seeds_disagree": (first != second).double().mean().item(),
            "whole_digit_agrees": None if whole is None else bool(torch.equal(whole, first)),
            "passes_per_image": len(GUESS_LEVELS) * draws * pipe.num_classes,
            "seconds_per_image": seconds / len(pixels)}


def completion_row(pipe: Pipeline, evaluator, mask: str, pixels: torch.Tensor, truth: torch.Tensor,
                   guess: bool) -> dict:
    keep = region_mask(mask)
    erased = torch.where(keep, pixels, torch.zeros_like(pixels))
    started = time.perf_counter()
    completed, digits = pipe.complete_with_digits(erased.numpy(), keep.numpy(), num_per_image=1, seed=0, guess=guess)
    seconds = time.perf_counter() - started
    images = torch.from_numpy(completed)
    _, probabilities = embed(evaluator.classifier, images)
    method = "guess the digit, then complete" if guess else "as whatever the strokes become (--no-guess)"
    read = (probabilities.argmax(1) == truth).double().mean().item()
    return {"mask": mask, "method": method, "read_as_true_digit": read,
            "precision": evaluator.score(method, images, memorize=False)[0].precision,
            "guess_right": (torch.from_numpy(digits) == truth).double().mean().item() if digits is not None else None,
            "seconds_per_digit": seconds / len(pixels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--start", type=int, default=5000)
    parser.add_argument("--masks", default="lower,right,center")
    parser.add_argument("--draws", default="1,2", help="noise draws per level to measure the guess with")
    parser.add_argument("--no-complete", dest="complete", action="store_false", help="measure the guess alone")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(RESULTS / "completion_guess"))
    args = parser.parse_args()
    pipe = Pipeline.load(device="cpu")
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    _, test_labels = load_mnist(args.data_root, "test", download=False)
    pixels, truth = test_images[args.start:args.start + args.num], test_labels[args.start:args.start + args.num]
    masks = args.masks.split(",")
    guessed = [guess_rows(pipe, mask, pixels, truth, int(draws)) for mask in masks for draws in args.draws.split(",")]
    for row in guessed:
        print(row, flush=True)
    completed = [completion_row(pipe, evaluator, mask, pixels, truth, guess) for mask in masks
                 for guess in (False, True)] if args.complete else []
    for row in completed:
        print(row, flush=True)
    command = (f"python benchmarks/completion_guess.py --num {args.num} --start {args.start} --masks {args.masks} "
               f"--draws {args.draws}" + ("" if args.complete else " --no-complete"))
    lines = [f"# Completion without a chosen digit ({time.strftime('%Y-%m-%d')})", "",
             f"`{command}`: MNIST test digits {args.start}-{args.start + args.num - 1}, each given as a user gives "
             f"it, the masked region set to black. The default is {GUESS_DRAWS} noise draws per level. Seconds are "
             "wall time on a machine that may have been doing other work.", "",
             "**The guess alone** (seeds 0 and 1; 'whole digit agrees': the guess given the unerased digit and the "
             "mask equals the erased input's guess on every digit, so the guess cannot read what is erased):", "",
             *markdown_table(["mask", "draws per level", "guess right (seed 0 / 1)", "seeds disagree",
                              "whole digit agrees", "passes / image", "s / image"],
                             [[r["mask"], r["draws"], f"{100 * r['right_seed0']:.1f}% / {100 * r['right_seed1']:.1f}%",
                               f"{100 * r['seeds_disagree']:.1f}%",
                               {True: "yes", False: "NO", None: "-"}[r["whole_digit_agrees"]],
                               r["passes_per_image"], f"{r['seconds_per_image']:.3f}"] for r in guessed])]
    if completed:
        lines += ["", "**Completion** (one RePaint completion each, seed 0, read by the shipped classifier; "
                  "precision against the 10,000 test digits in its feature space):", "",
                  *markdown_table(["mask", "method", "read as the true digit", "precision", "guess right", "s / digit"],
                                  [[r["mask"], r["method"], f"{100 * r['read_as_true_digit']:.1f}%",
                                    f"{r['precision']:.3f}",
                                    "-" if r["guess_right"] is None else f"{100 * r['guess_right']:.1f}%",
                                    f"{r['seconds_per_digit']:.2f}"] for r in completed])]
    write_report(args.out, {"num": args.num, "start": args.start, "default_draws": GUESS_DRAWS, "guess": guessed,
                            "completion": completed}, lines)


if __name__ == "__main__":
    main()
