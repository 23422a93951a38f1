"""Completion benchmark: how often a completed digit is read as the right one, per method and mask.

On the first N MNIST test digits with the lower half, the right half and the centre 12x12 erased,
the shipped classifier reads (a) the erased input, (b) completions without a label, (c) completions
with the true label and the default guidance, for x0-replacement (dpm++2m, 10 steps) and RePaint
(50 steps x 3 resamples). It also times each completion, and draws docs/images/completion.png
(inputs, masks, 8 completions each) and docs/images/interpolation.png.

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

from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.classifier import embed, load_classifier
from mnist_diffusion.completion import REPAINT_RESAMPLES, REPAINT_STEPS, complete, model_inputs, region_mask
from mnist_diffusion.data import load_mnist, to_uint8
from mnist_diffusion.sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS, network_passes_per_digit
from mnist_diffusion.schedule import NoiseSchedule

ROOT = Path(__file__).resolve().parent.parent
MASKS = ("lower", "right", "center")
METHODS = {"replace": {"method": "replace", "sampler": "dpm++2m", "steps": DEFAULT_STEPS},
           "repaint": {"method": "repaint", "steps": REPAINT_STEPS, "resamples": REPAINT_RESAMPLES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num", type=int, default=1000, help="test digits per mask")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "completion"))
    parser.add_argument("--figures-only", action="store_true", help="only draw the two figures")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    checkpoint = load_checkpoint()
    model, schedule = checkpoint.build_model(), NoiseSchedule(checkpoint.diffusion_config)
    images, labels = load_mnist(args.data_root, "test")
    _completion_figure(model, schedule, images[:4])
    _interpolation_figure(model, schedule)
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
        for name, options in METHODS.items():
            for given in (False, True):
                rows.append(_measure(model, schedule, classifier, pixels, keep, truth, mask_name, name, options,
                                     given))
                print(json.dumps(rows[-1]), flush=True)
    _write(rows, args)


def _accuracy(classifier, pixels: torch.Tensor, truth: torch.Tensor) -> float:
    _, probabilities = embed(classifier, pixels)
    return round((probabilities.argmax(1) == truth).double().mean().item(), 4)


def _measure(model, schedule, classifier, pixels, keep, truth, mask_name: str, name: str, options: dict,
             given: bool) -> dict:
    images, mask = model_inputs(pixels, keep, model.config.image_size)
    guidance = DEFAULT_GUIDANCE if given else 1.0
    started = time.perf_counter()
    out = complete(model, schedule, images, mask, labels=truth if given else None, guidance=guidance,
                   generator=torch.Generator().manual_seed(0), **options)
    seconds = time.perf_counter() - started
    evaluations = options["steps"] * options.get("resamples", 1)
    return {"mask": mask_name, "method": name, "label": f"true label, w={DEFAULT_GUIDANCE:g}" if given else "none",
            "accuracy": _accuracy(classifier, to_uint8(out), truth),
            "seconds_per_digit": round(seconds / len(pixels), 3),
            "passes_per_digit": network_passes_per_digit(evaluations, given, guidance)}


def _completion_figure(model, schedule, pixels: torch.Tensor) -> None:
    """Four test digits, each with three masks: input, masked input, then 8 unlabelled RePaint completions."""
    from mnist_diffusion.figures import strip_figure

    rows, names = [], []
    for mask_name in ("lower", "right", "center"):
        keep = region_mask(mask_name).expand(len(pixels), 28, 28)
        images, mask = model_inputs(pixels, keep, model.config.image_size)
        out = to_uint8(complete(model, schedule, images, mask, num_per_image=8,
                                generator=torch.Generator().manual_seed(1)))
        masked = torch.where(keep, pixels, torch.full_like(pixels, 60))  # erased pixels shown dark grey
        for i in range(len(pixels)):
            rows.append(torch.cat([pixels[i:i + 1], masked[i:i + 1], out[8 * i:8 * i + 8]]))
            names.append(f"{mask_name}")
    titles = ["digit", "erased"] + [f"#{k + 1}" for k in range(8)]
    path = strip_figure(rows, titles, "Completion without a label (RePaint): 8 drawings of each erased digit",
                        ROOT / "docs" / "images" / "completion.png", row_titles=names)
    print(f"wrote {path}")


def _interpolation_figure(model, schedule) -> None:
    from mnist_diffusion.figures import strip_figure
    from mnist_diffusion.interpolation import interpolate_digits, interpolate_seeds

    frames = 9
    rows = [to_uint8(interpolate_seeds(model, schedule, (1, 2), frames, digit=7, guidance=DEFAULT_GUIDANCE)),
            to_uint8(interpolate_seeds(model, schedule, (3, 4), frames, digit=2, guidance=DEFAULT_GUIDANCE)),
            to_uint8(interpolate_digits(model, schedule, (3, 8), frames, seed=0, guidance=DEFAULT_GUIDANCE)),
            to_uint8(interpolate_digits(model, schedule, (1, 7), frames, seed=5, guidance=DEFAULT_GUIDANCE))]
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
        "classifier (99.53% on the full test set) reads each completion. 'erased input' is the classifier on the "
        "digit with the region blacked out. Seconds per digit are wall time on "
        f"{meta['threads']} thread(s), in batches of 64 digits.", "", *table])


if __name__ == "__main__":
    main()
