"""Training throughput on this machine: images/s of one training step of the default recipe in fp32
against bfloat16 autocast, channels-last memory, a fused AdamW step and `torch.compile`, all
measured in one process with the same thread count, rounds interleaved so a busy moment hurts all
variants alike. Then whether bf16 holds the loss: the real `Trainer` from the same initial weights
on the same batches in fp32 and in bf16, loss compared step by step.

    python benchmarks/train_throughput.py [--threads 2] [--rounds 5] [--steps 10] [--loss-steps 200]

Bare steps are the network's forward and backward pass, clipping and AdamW on a batch already in
memory (batch 128, min-SNR-5 loss, labels, as `train` does); `Trainer.train_step` adds drawing the
batch. Writes benchmarks/results/train_throughput.md and .json.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from report import markdown_table, write_report

from mnist_diffusion.config import DiffusionConfig, TrainConfig, preset
from mnist_diffusion.data import load_mnist, to_model_space
from mnist_diffusion.devices import bf16_is_native
from mnist_diffusion.schedule import NoiseSchedule
from mnist_diffusion.train import Trainer, diffusion_loss
from mnist_diffusion.unet import UNet


@dataclass(frozen=True)
class Variant:
    name: str
    precision: str = "fp32"
    channels_last: bool = False
    fused: bool = False
    compiled: bool = False


VARIANTS = (Variant("fp32"), Variant("bf16", "bf16"),
            Variant("fp32 channels-last", channels_last=True),
            Variant("bf16 channels-last", "bf16", channels_last=True),
            Variant("fp32 fused AdamW", fused=True), Variant("bf16 fused AdamW", "bf16", fused=True),
            Variant("fp32 compiled", compiled=True), Variant("bf16 compiled", "bf16", compiled=True))


def bare_step(variant: Variant, batch: torch.Tensor, labels: torch.Tensor) -> tuple[Callable[[], None], float]:
    """A function doing one training step of `variant`, and the seconds its first two calls took
    (compilation included)."""
    torch.manual_seed(0)
    model = UNet(preset("small"))
    memory = torch.channels_last if variant.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=variant.fused or None)
    network = torch.compile(model) if variant.compiled else model
    schedule = NoiseSchedule(DiffusionConfig())
    x0 = batch.contiguous(memory_format=memory)

    def step() -> None:
        t = torch.randint(0, schedule.num_timesteps, (len(x0),))
        noise = torch.randn_like(x0).contiguous(memory_format=memory)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.precision == "bf16"):
            loss = diffusion_loss(network, schedule, x0, labels, t, noise, 5.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    start = time.perf_counter()
    step()
    step()
    return step, time.perf_counter() - start


def measure_bare(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    batch, batch_labels = to_model_space(images[: args.batch], 28), labels[: args.batch]
    steps, warmups, rates = {}, {}, {}
    for variant in VARIANTS:
        if variant.compiled and not args.compile:
            continue
        steps[variant], warmups[variant] = bare_step(variant, batch, batch_labels)
        rates[variant] = []
        print(f"{variant.name}: first two steps {warmups[variant]:.1f} s", flush=True)
    for _ in range(args.rounds):
        for variant, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            rates[variant].append(args.steps * args.batch / (time.perf_counter() - start))
    return [{"variant": v.name, "images_per_s": statistics.median(rates[v]), "rounds": rates[v],
             "first_two_steps_s": warmups[v]} for v in steps]


def loss_check(args: argparse.Namespace, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """The real Trainer from the same initial weights on the same batches, fp32 and bf16."""
    result: dict[str, dict] = {}
    for precision in ("fp32", "bf16"):
        config = replace(TrainConfig(), max_steps=args.loss_steps, precision=precision)
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = Trainer(run_dir, preset("small"), DiffusionConfig(), config, images=images, labels=labels,
                              device="cpu")
            losses, start = [], time.perf_counter()
            for _ in range(args.loss_steps):
                losses.append(trainer.train_step(trainer.decay_progress(0.0)))
            seconds = time.perf_counter() - start
        result[precision] = {"losses": losses, "images_per_s": args.loss_steps * config.batch_size / seconds}
        print(f"Trainer {precision}: {result[precision]['images_per_s']:.1f} images/s", flush=True)
    return result


def window_mean(losses: list[float], lo: int, hi: int) -> float:
    return statistics.fmean(losses[lo:hi])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per variant (median reported)")
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--loss-steps", type=int, default=200, help="steps of the fp32/bf16 Trainer comparison")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile rows")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = load_mnist(args.data_root, "train")
    bare = measure_bare(args, images, labels)
    losses = loss_check(args, images, labels) if args.loss_steps else {}
    base = bare[0]["images_per_s"]
    rows = [[r["variant"], f"{r['images_per_s']:.1f}", f"{r['images_per_s'] / base:.2f}x",
             f"{min(r['rounds']):.0f}-{max(r['rounds']):.0f}", f"{r['first_two_steps_s']:.1f}"] for r in bare]
    command = (f"python benchmarks/train_throughput.py --threads {args.threads} --rounds {args.rounds} "
               f"--steps {args.steps} --loss-steps {args.loss_steps}" + ("" if args.compile else " --no-compile"))
    lines = [f"# Training throughput ({time.strftime('%Y-%m-%d')})", "",
             f"`{command}` on {platform.machine()}, {platform.processor() or 'CPU'}, torch {torch.__version__}, "
             f"{args.threads} threads, bf16 native: {bf16_is_native('cpu')}. Bare training steps of the default "
             f"recipe (small UNet, batch {args.batch}); median images/s of {args.rounds} interleaved rounds of "
             f"{args.steps} steps.", "",
             *markdown_table(["variant", "images/s", "vs fp32", "range over rounds", "first 2 steps (s)"], rows)]
    if losses:
        n = args.loss_steps
        fp32, bf16 = losses["fp32"]["losses"], losses["bf16"]["losses"]
        gap = [abs(a - b) / a for a, b in zip(fp32, bf16, strict=True)]
        lines += ["", f"`Trainer.train_step` (batch drawn from MNIST as `train` does), {n} steps from the same "
                      f"initial weights on the same batches:", "",
                  *markdown_table(["precision", "images/s", f"mean loss, steps {n // 2}-{n}", "mean loss, last 20"],
                                  [[p, f"{losses[p]['images_per_s']:.1f}",
                                    f"{window_mean(losses[p]['losses'], n // 2, n):.5f}",
                                    f"{window_mean(losses[p]['losses'], n - 20, n):.5f}"] for p in ("fp32", "bf16")]),
                  "", f"Step-by-step relative loss difference: median {statistics.median(gap):.2%}, "
                      f"largest {max(gap):.2%} (the same batch, so the gap is bf16's rounding, compounded "
                      f"through the weights)."]
    write_report(args.out, {"command": command, "bare": bare, "trainer": losses}, lines)


if __name__ == "__main__":
    main()
