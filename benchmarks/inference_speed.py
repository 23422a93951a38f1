"""Network forward passes per second for sampling: contiguous (NCHW) versus channels_last input.

    python benchmarks/inference_speed.py [--checkpoint PATH] [--batch 256] [--repeats 5]

Both layouts are timed alternately in one run, several rounds, and the ratio of the medians is
reported; writes benchmarks/results/inference_speed.md.
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
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "inference_speed.md"))
    args = parser.parse_args()
    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.build_model()
    size = checkpoint.model_config.image_size
    x = torch.randn(args.batch, 1, size, size)
    t = torch.full((args.batch,), checkpoint.diffusion_config.num_timesteps // 2)
    labels = torch.arange(args.batch) % 11 if checkpoint.model_config.conditional else None
    layouts = {"contiguous": x.contiguous(), "channels_last": x.contiguous(memory_format=torch.channels_last)}
    rates: dict[str, list[float]] = {name: [] for name in layouts}
    with torch.inference_mode():
        for tensor in layouts.values():
            model(tensor, t, labels)  # warm-up
        for _ in range(args.repeats):
            for name, tensor in layouts.items():
                start = time.perf_counter()
                model(tensor, t, labels)
                rates[name].append(args.batch / (time.perf_counter() - start))
    median = {name: statistics.median(values) for name, values in rates.items()}
    ratio = median["channels_last"] / median["contiguous"]
    lines = ["# Inference speed: input memory layout", "",
             f"Model: {args.checkpoint or 'shipped default'}; batch {args.batch}; {torch.get_num_threads()} threads; "
             f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}. "
             f"Median of {args.repeats} alternating rounds.", "",
             "| layout | forward passes (images) / s |", "|---|---|"]
    lines += [f"| {name} | {median[name]:.0f} |" for name in layouts]
    lines += ["", f"channels_last / contiguous = **{ratio:.2f}x**", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
