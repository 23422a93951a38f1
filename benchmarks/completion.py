"""Completion benchmark: how often a completed digit is read as the right one, per method and mask.

On the first N MNIST test digits with the lower half, the right half and the centre 12x12 erased
(the erased pixels set to black, as a user gives them), the shipped classifier reads (a) the erased
input, (b) completions without a label (and without a guess), (c) completions with the true label and
the default guidance, for x0-replacement (the default sampler's walk) and RePaint (50 levels x 3
resamples), each drawn by `Pipeline.complete` as the command line draws it. It also times each
completion, and draws docs/images/completion.png (inputs, masks, 8 completions each) and
docs/images/interpolation.png.

    python benchmarks/completion.py --num 1000          # writes benchmarks/results/completion.{md,json}
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from report import markdown_table, write_report

from mnist_diffusion.classifier import embed, load_classifier
from mnist_diffusion.completion import completion_cost, region_mask
from mnist_diffusion.data import load_mnist
from mnist_diffusion.pipeline import Pipeline

ROOT = Path(__file__).resolve().parent.parent
MASKS = ("lower", "right", "center")
METHODS = ("replace", "repaint")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=1000, help="test digits per mask")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "completion"))
    parser.add_argument("--figures-only", action="store_true", help="only draw the two figures")
    args = parser.parse_args()
    pipe = Pipeline.load(device="cpu", threads=args.threads)
    images, labels = load_mnist(args.data_root, "test")
    _completion_figure(pipe, images[:4])
    _interpolation_figure(pipe)
    if args.figures_only:
        return
    classifier = load_classifier()
    rows = []
    for mask_name in MASKS:
        pixels, truth = images[:args.num], labels[:args.num]
        keep = region_mask(mask_name).expand(len(pixels), 28, 28)
        erased = torch.where(keep, pixels, torch.zeros_like(pixels))
        rows.append({"mask": mask_name, "method": "erased input", "label": "-", "accuracy": _accuracy(
            classifier, erased, truth), "seconds_per_digit": 0.0, "passes_per_digit": 0})
        for method in METHODS:
            for given in (False, True):
                rows.append(_measure(pipe, classifier, erased, keep, truth, mask_name, method, given))
                print(json.dumps(rows[-1]), flush=True)
    _write(rows, args)


def _accuracy(classifier, pixels: torch.Tensor, truth: torch.Tensor) -> float:
    _, probabilities = embed(classifier, pixels)
    return round((probabilities.argmax(1) == truth).double().mean().item(), 4)


def _measure(pipe: Pipeline, classifier, erased, keep, truth, mask_name: str, method: str, given: bool) -> dict:
    guidance = pipe.defaults.guidance if given else 1.0
    started = time.perf_counter()
    out = torch.from_numpy(pipe.complete(erased.numpy(), keep[0].numpy(), digit=None, num_per_image=1,
                                         method=method, seed=0, guess=False) if not given else
                           _complete_as(pipe, erased, keep, truth, method))
    seconds = time.perf_counter() - started
    settings = pipe.settings(guidance=guidance)
    cost = completion_cost(pipe.schedule, settings, pipe.guidance(settings, given), method)
    return {"mask": mask_name, "method": method, "label": f"true label, w={guidance:g}" if given else "none",
            "accuracy": _accuracy(classifier, out, truth), "seconds_per_digit": round(seconds / len(erased), 3),
            "passes_per_digit": cost.passes}


def _complete_as(pipe: Pipeline, erased, keep, truth, method: str):
    """Each digit completed as its true label (one call per label, as a user asking for it would)."""
    out = torch.zeros_like(erased)
    for digit in truth.unique().tolist():
        chosen = (truth == digit).nonzero().flatten()
        out[chosen] = torch.from_numpy(pipe.complete(erased[chosen].numpy(), keep[0].numpy(), digit=digit,
                                                     num_per_image=1, method=method, seed=0))
    return out.numpy()


def _completion_figure(pipe: Pipeline, pixels: torch.Tensor) -> None:
    """Four test digits, each with three masks: input, masked input, then 8 unlabelled RePaint completions."""
    from mnist_diffusion.figures import strip_figure

    rows, names = [], []
    for mask_name in ("lower", "right", "center"):
        keep = region_mask(mask_name).expand(len(pixels), 28, 28)
        erased = torch.where(keep, pixels, torch.zeros_like(pixels))
        out = torch.from_numpy(pipe.complete(erased.numpy(), keep[0].numpy(), num_per_image=8, seed=1, guess=False))
        masked = torch.where(keep, pixels, torch.full_like(pixels, 60))  # erased pixels shown dark grey
        for i in range(len(pixels)):
            rows.append(torch.cat([pixels[i:i + 1], masked[i:i + 1], out[8 * i:8 * i + 8]]))
            names.append(f"{mask_name}")
    titles = ["digit", "erased"] + [f"#{k + 1}" for k in range(8)]
    path = strip_figure(rows, titles, "Completion without a label (RePaint): 8 drawings of each erased digit",
                        ROOT / "docs" / "images" / "completion.png", row_titles=names)
    print(f"wrote {path}")


def _interpolation_figure(pipe: Pipeline) -> None:
    from mnist_diffusion.figures import strip_figure

    frames = 9
    rows = [torch.from_numpy(pipe.interpolate(seeds=(1, 2), digit=7, frames=frames)),
            torch.from_numpy(pipe.interpolate(seeds=(3, 4), digit=2, frames=frames)),
            torch.from_numpy(pipe.interpolate(digits=(3, 8), seed=0, frames=frames)),
            torch.from_numpy(pipe.interpolate(digits=(1, 7), seed=5, frames=frames))]
    path = strip_figure(rows, [f"{k}/{frames - 1}" for k in range(frames)],
                        "Interpolation: between two seeds (rows 1-2) and between two digits (rows 3-4)",
                        ROOT / "docs" / "images" / "interpolation.png",
                        row_titles=["7: seed 1\u21922", "2: seed 3\u21924", "3\u21928, seed 0", "1\u21927, seed 5"])
    print(f"wrote {path}")


def _write(rows: list[dict], args: argparse.Namespace) -> None:
    meta = {"num_per_mask": args.num, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "model": "shipped default"}
    header = ["mask", "method", "label", "read as the right digit", "s / digit", "network passes / digit"]
    table = markdown_table(header,
                           [[row["mask"], row["method"], row["label"], f"{100 * row['accuracy']:.1f}%",
                             f"{row['seconds_per_digit']:.3f}", row["passes_per_digit"]] for row in rows])
    write_report(args.out, {"meta": meta, "rows": rows}, [
        "# Completion benchmark", "",
        f"Made by `python benchmarks/completion.py --num {args.num} --threads {meta['threads']}` on the shipped "
        f"model, {meta['date']}, torch {meta['torch']}. The first {args.num} MNIST test digits per mask; the shipped "
        "classifier (99.53% on the full test set) reads each completion. Every method is given the digit with the "
        "region blacked out, as a user gives it; 'erased input' is the classifier on that input. Seconds per digit "
        "are wall time on "
        f"{meta['threads']} thread(s), in batches of 64 digits.", "", *table])


if __name__ == "__main__":
    main()
