"""Network forward passes per second for sampling, by batch size (and optionally torch.compile).

    python benchmarks/inference_speed.py [--checkpoint PATH] [--batches 16,32,64,128,256,512] [--compile]

Every batch size is timed in alternating rounds within one run (so a busy moment hurts all of them
alike) and the median images/s of each is reported beside its ratio to the best. `--compile` adds
the same model under `torch.compile` (its compile time reported separately). An earlier version
compared channels_last with contiguous input: 0.91x and 0.99x, so sampling keeps the default
layout. Writes benchmarks/results/inference_speed.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from mnist_diffusion.checkpoint import load_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint")
    parser.add_argument("--batches", default="16,32,64,128,256,512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed per batch size per round")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(model)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference_speed.md"))
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.build_model().eval()
    size, steps = checkpoint.model_config.image_size, checkpoint.diffusion_config.num_timesteps
    variants = {"eager": model}
    compile_s = None
    sizes = [int(b) for b in args.batches.split(",")]

    def inputs(batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        labels = torch.arange(batch) % 11 if checkpoint.model_config.conditional else None
        return torch.randn(batch, 1, size, size), torch.full((batch,), steps // 2), labels

    with torch.inference_mode():
        if args.compile:
            variants["compiled"] = torch.compile(model, dynamic=False)
            start = time.perf_counter()
            for batch in sizes:
                variants["compiled"](*inputs(batch))
            compile_s = time.perf_counter() - start
        rates: dict[tuple[str, int], list[float]] = {(name, b): [] for name in variants for b in sizes}
        for (name, batch) in rates:
            variants[name](*inputs(batch))  # warm-up
        for _ in range(args.rounds):
            for (name, batch) in rates:
                x = inputs(batch)
                count, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    variants[name](*x)
                    count += batch
                rates[(name, batch)].append(count / (time.perf_counter() - start))
    median = {key: statistics.median(values) for key, values in rates.items()}
    best = max(median.values())
    lines = ["# Inference speed: forward passes per second by batch size", "",
             f"Model: {args.checkpoint or 'shipped default'}; {torch.get_num_threads()} threads; "
             f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}. Median of {args.rounds} alternating "
             f"rounds of {args.seconds:g} s each.", "",
             "| model | batch | images / s | ratio to best |", "|---|---|---|---|"]
    lines += [f"| {name} | {batch} | {median[(name, batch)]:.0f} | {median[(name, batch)] / best:.2f} |"
              for (name, batch) in rates]
    if compile_s is not None:
        lines += ["", f"torch.compile: {compile_s:.0f} s to compile the {len(sizes)} batch shapes."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
