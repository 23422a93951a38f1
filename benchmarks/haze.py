"""Where do the background haze and the stray dots come from? One model, many ways to sample it.

For each sampling variant, N digits (an even mix, the same seed) are counted for the share of
pixels exactly 0 (MNIST: 81%) and the share of digits with more than one piece of ink (stray dots),
beside FID at that N in the shipped classifier's space. Variants change one thing at a time: the
sampler and its steps, clipping of the predicted clean image, and the final step.

    python benchmarks/haze.py --num 1000      # writes benchmarks/results/haze.{md,json}
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from report import markdown_table, write_report

from mnist_diffusion import scoring
from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.data import NUM_CLASSES, to_uint8
from mnist_diffusion.evaluate import stray_ink_share, zero_pixel_share
from mnist_diffusion.sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS, generate, network_passes_per_digit
from mnist_diffusion.schedule import NoiseSchedule

ROOT = Path(__file__).resolve().parent.parent
# (name, generate keyword arguments): one change from the default per row.
VARIANTS = [
    (f"dpm++2m, 10 steps (the default is {DEFAULT_STEPS})", {"sampler": "dpm++2m", "steps": 10}),
    ("dpm++2m, 25 steps", {"sampler": "dpm++2m", "steps": 25}),
    ("dpm++2m, 10 steps, no clipping", {"sampler": "dpm++2m", "steps": 10, "clip": False}),
    ("ddim, 10 steps", {"sampler": "ddim", "steps": 10}),
    ("ddim, 50 steps", {"sampler": "ddim", "steps": 50}),
    ("ddpm, 10 steps", {"sampler": "ddpm", "steps": 10}),
    ("ddpm, 20 steps", {"sampler": "ddpm", "steps": 20}),
    ("dpm++2m-sde, 10 steps", {"sampler": "dpm++2m-sde", "steps": 10}),
    ("dpm++2m-sde, 20 steps", {"sampler": "dpm++2m-sde", "steps": 20}),
    ("dpm++2m-sde eta 0.5, 10 steps", {"sampler": "dpm++2m-sde", "steps": 10, "sampler_kwargs": {"eta": 0.5}}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", help="default: the shipped model")
    parser.add_argument("--variants", help="names of VARIANTS to run, comma-separated (default: all)")
    parser.add_argument("--num", type=int, default=1000)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "haze"))
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    learned = checkpoint.model_config.guidance_input
    chosen = args.variants.split(",") if args.variants else [name for name, _ in VARIANTS]
    model, schedule = checkpoint.build_model(), NoiseSchedule(checkpoint.diffusion_config)
    evaluator, _, test_images = scoring.evaluator_for(args.data_root)
    labels = torch.arange(args.num) % NUM_CLASSES
    rows = [{"variant": "MNIST test digits (reference)", "zero_pixels": zero_pixel_share(test_images),
             "stray_ink": stray_ink_share(test_images), "fid": None, "passes": 0, "seconds": 0.0}]
    for name, options in [(name, options) for name, options in VARIANTS if name in chosen]:
        started = time.perf_counter()
        images = to_uint8(generate(model, schedule, args.num, labels=labels, guidance=DEFAULT_GUIDANCE,
                                   generator=torch.Generator().manual_seed(0), **options))
        seconds = time.perf_counter() - started
        scored, _ = evaluator.score(name, images, labels, memorize=False)
        rows.append({"variant": name, "zero_pixels": scored.zero_pixels, "stray_ink": scored.stray_ink,
                     "fid": scored.fid, "passes": network_passes_per_digit(options["steps"], True, DEFAULT_GUIDANCE,
                                                                         learned_guidance=learned),
                     "seconds": round(seconds, 1)})
        print(json.dumps(rows[-1]), flush=True)
    _write(rows, args)


def _write(rows: list[dict], args: argparse.Namespace) -> None:
    table = markdown_table(
        ["variant", "zero pixels", "several ink pieces", "FID", "network passes / digit", "seconds"],
        [[row["variant"], f"{100 * row['zero_pixels']:.1f}%", f"{100 * row['stray_ink']:.1f}%",
          "-" if row["fid"] is None else f"{row['fid']:.2f}", row["passes"], row["seconds"]] for row in rows])
    write_report(args.out, {"num": args.num, "rows": rows}, [
        "# Haze and stray dots by sampling variant", "",
        f"Made by `python benchmarks/haze.py --num {args.num}` on {args.checkpoint or 'the shipped model'} "
        f"(guidance {DEFAULT_GUIDANCE}, "
        f"seed 0, {args.num} digits, an even mix), {time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} threads. "
        "Zero pixels: share of pixels exactly 0. Several ink pieces: share of digits whose ink (pixels > 50) falls "
        "in more than one 8-connected piece. FID at this N (biased upwards; compare rows only with each other).",
        "", *table])


if __name__ == "__main__":
    main()
