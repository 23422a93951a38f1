"""Training benchmark: train recipes for the same wall-clock budget, then score them the same way.

    python benchmarks/train_budget.py --minutes 60 [--recipes default,seed-002] [--eval-num 10000]

For each recipe it trains from scratch in `runs/budget/<recipe>`, keeps a checkpoint every
`--curve-every` minutes, scores each one with `--curve-num` samples (the FID-against-minutes curve)
and the last with `--eval-num`, and appends a row per recipe to benchmarks/results/training.md
(plus training.json and fid_vs_minutes.png). In the same run it measures the machine's fp32 matmul
rate, so throughput is reported as a share of what this CPU can do. Recipes:

- default: what `mnist-diffusion train` does with no options (class-conditional, EMA).
- seed-002: the second write-up's recipe at its scale: a 2.6M UNet, T=300, linear betas, Adam
  1e-4, batch 128, unconditional, no EMA (betas rescaled by 1000/T, see schedule.linear_betas).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import replace
from pathlib import Path

import torch

from mnist_diffusion.classifier import load_classifier
from mnist_diffusion.config import DiffusionConfig, TrainConfig, preset
from mnist_diffusion.data import NUM_CLASSES, load_mnist, to_uint8
from mnist_diffusion.evaluate import Evaluator
from mnist_diffusion.sampling import DEFAULT_GUIDANCE, generate
from mnist_diffusion.train import Trainer, diffusion_loss

RESULTS = Path(__file__).parent / "results"
RECIPES = {
    "default": (preset("small"), DiffusionConfig(), TrainConfig(), DEFAULT_GUIDANCE),
    "seed-002": (preset("seed-002", num_classes=0), DiffusionConfig(num_timesteps=300),
                 TrainConfig(lr=1e-4, warmup_steps=1, grad_clip=0.0, ema_decay=0.0, ema_warmup_steps=0), 0.0),
}


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def train_flops_per_image(model_config, diffusion_config, batch: int = 32) -> float:
    """FLOPs of one forward+backward pass per image, by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from mnist_diffusion.schedule import NoiseSchedule
    from mnist_diffusion.unet import UNet

    model, schedule = UNet(model_config), NoiseSchedule(diffusion_config)
    x0 = torch.zeros(batch, 1, model_config.image_size, model_config.image_size)
    t = torch.randint(0, diffusion_config.num_timesteps, (batch,))
    labels = torch.zeros(batch, dtype=torch.long) if model_config.conditional else None
    with FlopCounterMode(display=False) as counter:
        diffusion_loss(model, schedule, x0, labels, t, torch.randn_like(x0)).backward()
    return counter.get_total_flops() / batch


def score(evaluator: Evaluator, model, schedule, conditional: bool, guidance: float, num: int) -> dict:
    labels = torch.arange(num) % NUM_CLASSES if conditional and guidance > 0 else None
    images = to_uint8(generate(model, schedule, num, labels=labels, guidance=guidance,
                               generator=torch.Generator().manual_seed(0)))
    row, _ = evaluator.score("model", images, labels, memorize=num >= 10_000)
    return {k: v for k, v in row.__dict__.items() if k not in ("name", "histogram") and v is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--recipes", default="default,seed-002")
    parser.add_argument("--eval-num", type=int, default=10_000)
    parser.add_argument("--curve-every", type=float, default=10, help="minutes between curve points")
    parser.add_argument("--curve-num", type=int, default=1000)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--run-root", default="runs/budget")
    args = parser.parse_args()

    peak_gflops = matmul_gflops()
    images, labels = load_mnist(args.data_root, "train")
    test_images, _ = load_mnist(args.data_root, "test")
    evaluator = Evaluator(load_classifier(), test_images, images)
    floor = evaluator.score("floor", images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
                                           [:10_000]], memorize=False)[0]
    results = []
    for name in args.recipes.split(","):
        model_config, diffusion_config, train_config, guidance = RECIPES[name]
        flops = train_flops_per_image(model_config, diffusion_config)
        run_dir = Path(args.run_root) / name
        curve = []
        trained_minutes = 0.0
        while trained_minutes < args.minutes:
            trained_minutes = min(args.minutes, trained_minutes + args.curve_every)
            config = replace(train_config, max_minutes=trained_minutes, sample_every=10**9)
            trainer = Trainer(run_dir, model_config, diffusion_config, config, images=images, labels=labels)
            result = trainer.run()
            point = score(evaluator, trainer.ema.model, trainer.schedule, model_config.conditional, guidance,
                          args.curve_num)
            curve.append({"minutes": round(result.elapsed_s / 60, 2), "fid": point["fid"]})
            print(name, curve[-1], flush=True)
        final = score(evaluator, trainer.ema.model, trainer.schedule, model_config.conditional, guidance,
                      args.eval_num)
        images_per_s = result.images_seen / result.elapsed_s
        results.append({
            "recipe": name, "minutes": round(result.elapsed_s / 60, 1), "steps": result.step,
            "images_seen": result.images_seen, "images_per_s": round(images_per_s, 1),
            "train_gflop_per_image": round(flops / 1e9, 3),
            "achieved_gflops": round(images_per_s * flops / 1e9, 1), "matmul_peak_gflops": round(peak_gflops, 1),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
            "metrics": final, "curve": curve,
        })
        print(json.dumps(results[-1]), flush=True)
    _write(results, floor, args)


def _write(results: list[dict], floor, args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "training.json").write_text(json.dumps({"floor": floor.__dict__, "results": results}, indent=2))
    path = RESULTS / "training.md"
    if not path.exists():
        path.write_text("# Training benchmark\n\nRows appended by `python benchmarks/train_budget.py`; each row's "
                        "metrics come from `mnist-diffusion evaluate`'s code on samples of the default sampler.\n\n"
                        "| date | recipe | minutes | steps | images/s | GFLOP/img | share of matmul peak | peak RSS GB "
                        "| N | FID | floor FID | precision | recall | coverage | cond. acc. | copies |\n"
                        "|" + "---|" * 16 + "\n")
    with open(path, "a") as handle:
        for r in results:
            m = r["metrics"]
            handle.write(f"| {time.strftime('%Y-%m-%d')} | {r['recipe']} | {r['minutes']} | {r['steps']} | "
                         f"{r['images_per_s']} | {r['train_gflop_per_image']} | "
                         f"{r['achieved_gflops'] / r['matmul_peak_gflops']:.0%} | {r['peak_rss_gb']} | "
                         f"{m['count']} | {m['fid']:.2f} | {floor.fid:.2f} | {m['precision']:.3f} | "
                         f"{m['recall']:.3f} | {m['coverage']:.3f} | {m.get('conditional_accuracy', '-')} | "
                         f"{m.get('near_copy_rate', '-')} |\n")
    _plot(results)
    print(f"appended to {path}")


def _plot(results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in results:
        ax.plot([p["minutes"] for p in r["curve"]], [p["fid"] for p in r["curve"]], marker="o", label=r["recipe"])
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("classifier FID (lower is better)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(RESULTS / "fid_vs_minutes.png", dpi=110)


if __name__ == "__main__":
    main()
