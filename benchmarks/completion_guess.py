"""Completion without a chosen digit: completing as whatever the strokes become (the method before)
against first guessing the digit the strokes begin (`completion.guess_digit`), on held-out digits.

    python benchmarks/completion_guess.py [--num 500] [--start 5000] [--masks lower,right,center]

For each mask, the MNIST test digits START..START+NUM (the guess's noise levels were chosen on the
first 300, so these are unseen) are erased and completed once each with RePaint, the default, as
before (`--no-guess`) and as now (guess, then complete as that digit, unguided). The shipped
classifier reads each completion: how often it reads the true digit, and the completions' precision
(in the classifier's feature space, against the test set). Writes benchmarks/results/completion_guess.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from report import markdown_table, write_report

from mnist_diffusion import scoring
from mnist_diffusion.classifier import embed
from mnist_diffusion.pipeline import Pipeline

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=500)
    parser.add_argument("--start", type=int, default=5000)
    parser.add_argument("--masks", default="lower,right,center")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(RESULTS / "completion_guess"))
    args = parser.parse_args()
    pipe = Pipeline.load(device="cpu")
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    from mnist_diffusion.data import load_mnist

    _, test_labels = load_mnist(args.data_root, "test", download=False)
    pixels = test_images[args.start:args.start + args.num]
    truth = test_labels[args.start:args.start + args.num]
    rows, payload = [], {"num": args.num, "start": args.start, "rows": []}
    for mask in args.masks.split(","):
        for method, guess in (("as whatever the strokes become (before)", False), ("guess the digit, then complete",
                                                                                    True)):
            started = time.perf_counter()
            completed, digits = pipe.complete_with_digits(pixels.numpy(), mask, num_per_image=1, seed=0, guess=guess)
            seconds = time.perf_counter() - started
            images = torch.from_numpy(completed)
            _, probabilities = embed(evaluator.classifier, images)
            accuracy = (probabilities.argmax(1) == truth).double().mean().item()
            precision = evaluator.score(method, images, memorize=False)[0].precision
            guessed = (torch.from_numpy(digits) == truth).double().mean().item() if digits is not None else None
            row = {"mask": mask, "method": method, "read_as_true_digit": round(accuracy, 4),
                   "precision": round(precision, 4), "guess_right": round(guessed, 4) if guessed is not None else None,
                   "seconds_per_digit": round(seconds / args.num, 3)}
            payload["rows"].append(row)
            rows.append([mask, method, f"{100 * accuracy:.1f}%", f"{precision:.3f}",
                         "-" if guessed is None else f"{100 * guessed:.1f}%", f"{seconds / args.num:.2f}"])
            print(row, flush=True)
    lines = [f"# Completion without a chosen digit ({time.strftime('%Y-%m-%d')})", "",
             f"`python benchmarks/completion_guess.py --num {args.num} --start {args.start} --masks {args.masks}`: "
             f"MNIST test digits {args.start}-{args.start + args.num - 1}, one RePaint completion each (seed 0), read "
             f"by the shipped classifier; precision against the 10,000 test digits in its feature space.", "",
             *markdown_table(["mask", "method", "read as the true digit", "precision", "guess right",
                              "s / digit"], rows)]
    write_report(args.out, payload, lines)


if __name__ == "__main__":
    main()
