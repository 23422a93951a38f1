"""Sampling benchmark: every sampler at 5, 10, 20, 50 steps and DDPM at full T, in one run.

For one checkpoint it measures wall time per image, network forward passes per image, images per
second and, when the MNIST files and the shipped classifier are there, the quality metrics of
`mnist-diffusion evaluate` on the same samples. Writes benchmarks/results/sampling.{md,json}.

    python benchmarks/sampling.py [--checkpoint PATH] [--num 1000] [--full-num 1000] [--guidance 1,2]

All rows use the same seed and labels (equal numbers of each digit), so rows of one guidance
weight differ only in the sampler; a list of weights repeats the plan for each (`--full-num 0`
leaves out the full-T DDPM rows, which cost T passes per image). Every other setting is the
product's default (`SampleConfig`: end point, precision, log-SNR floor). Classifier-free guidance runs
the conditional and unconditional branches in one batched forward pass; "passes/img" counts it as
two, as `sampling.count_passes` does.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from mnist_diffusion import options, scoring
from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.config import SampleConfig
from mnist_diffusion.data import NUM_CLASSES, DataError, to_uint8
from mnist_diffusion.sampling import DEFAULT_SPACING, Guidance, count_passes, generate
from mnist_diffusion.schedule import NoiseSchedule

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="default: the shipped model")
    parser.add_argument("--num", type=int, default=1000, help="images per few-step row")
    parser.add_argument("--full-num", type=int, default=1000, help="images for DDPM at full T")
    parser.add_argument("--steps", default="5,10,20,50")
    parser.add_argument("--samplers", default="ddim,dpm++2m,ddpm")
    parser.add_argument("--guidance", default=str(SampleConfig.guidance), help="weights, comma-separated")
    parser.add_argument("--intervals", default="all",
                        help="guidance intervals LOW,HIGH (shares of T) or all (every step), the command line's "
                             "syntax; several separated by ';'")
    parser.add_argument("--batch-size", type=int, default=SampleConfig.max_batch, help="digits per network pass")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(RESULTS / "sampling"))
    parser.add_argument("--no-figure", action="store_true", help="skip the sampler comparison figure")
    args = parser.parse_args()

    checkpoint = load_checkpoint(args.checkpoint)
    model = checkpoint.build_model()
    schedule = NoiseSchedule(checkpoint.diffusion_config)
    evaluator = _evaluator(args.data_root)

    intervals = [options.guidance_interval(text) for text in args.intervals.split(";")]
    plan = [(float(w), name, int(steps), interval) for w in args.guidance.split(",") for interval in intervals
            for name in args.samplers.split(",") for steps in args.steps.split(",")]
    if args.full_num > 0:
        plan += [(float(w), "ddpm", None, "all") for w in args.guidance.split(",")]
    rows = []
    for guidance, name, steps, interval in plan:
        # The product's defaults (end point, precision, log-SNR floor) with this row's four settings.
        settings = SampleConfig(sampler=name, steps=steps, guidance=guidance, guidance_interval=interval,
                                max_batch=args.batch_size)
        num = args.num if steps is not None else args.full_num
        labels = torch.arange(num) % NUM_CLASSES if checkpoint.model_config.conditional else None
        start = time.perf_counter()
        images = generate(model, schedule, num, settings, labels=labels, generator=torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
        plan_of_steps = Guidance(labels is not None, guidance, interval, checkpoint.model_config.guidance_input)
        row = {"guidance": guidance, "interval": options.format_interval(interval), "sampler": name,
               "steps": steps or schedule.num_timesteps, "spacing": DEFAULT_SPACING[name], "num": num,
               "last_timestep": settings.last_timestep, "seconds": round(seconds, 2),
               "ms_per_image": round(1000 * seconds / num, 2), "images_per_s": round(num / seconds, 2),
               "passes_per_image": count_passes(schedule, settings, plan_of_steps)}
        if evaluator is not None:
            scored, _ = evaluator.score(f"{name}-{steps}", to_uint8(images), labels, memorize=False)
            row.update(fid=round(scored.fid, 3), precision=round(scored.precision, 4),
                       recall=round(scored.recall, 4), coverage=round(scored.coverage, 4),
                       zero_pixels=round(scored.zero_pixels, 4), stray_ink=round(scored.stray_ink, 4),
                       conditional_accuracy=None if labels is None else round(scored.conditional_accuracy, 4))
        rows.append(row)
        print(json.dumps(row), flush=True)
    _write(rows, args, checkpoint, evaluator is not None)
    if not args.no_figure:
        _comparison_figure(model, schedule, checkpoint.model_config.conditional, float(args.guidance.split(",")[0]),
                           Path(args.out).parent)
    # The README shows this figure as docs/images/sampler_comparison.png (copied by hand).


def _comparison_figure(model, schedule, conditional: bool, guidance: float, out_dir: Path) -> None:
    """The same ten digits (same noise, same labels) from each sampler and step count."""
    from mnist_diffusion.figures import strip_figure

    labels = torch.arange(NUM_CLASSES) if conditional else None
    rows, titles = [], []
    for name, steps in [("ddpm", None), ("ddpm", 50), ("ddim", 10), ("ddim", 20),
                        ("ddim", 50), ("dpm++2m", 5), ("dpm++2m", 10), ("dpm++2m", 20)]:
        settings = SampleConfig(sampler=name, steps=steps, guidance=guidance)
        images = generate(model, schedule, NUM_CLASSES, settings, labels=labels,
                          generator=torch.Generator().manual_seed(1))
        rows.append(to_uint8(images))
        titles.append(f"{name}, {steps or 'all'}")
    path = strip_figure(rows, [str(d) for d in range(NUM_CLASSES)], "Same noise, same labels: sampler, steps",
                        out_dir / "sampler_comparison.png", row_titles=titles)
    print(f"wrote {path}")


def _evaluator(data_root: str):
    try:
        return scoring.evaluator_for(data_root, download=False)[0]
    except (DataError, ValueError) as error:
        print(f"no quality metrics ({error})", file=sys.stderr)
        return None


def _write(rows: list[dict], args: argparse.Namespace, checkpoint, with_quality: bool) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    full_t = max(r["steps"] for r in rows)
    full = {r["guidance"]: r for r in rows if r["sampler"] == "ddpm" and r["steps"] == full_t}
    machine = {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu": platform.processor() or platform.machine()}
    meta = {"checkpoint": args.checkpoint or "shipped default", "step": checkpoint.step, "guidance": args.guidance,
            "batch_size": args.batch_size, "machine": machine, "date": time.strftime("%Y-%m-%d")}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    header = ["w", "guided on t/T", "sampler", "steps", "spacing", "N", "ms/img", "img/s", "network passes/img",
              "speed-up vs DDPM-full"]
    if with_quality:
        header += ["FID", "precision", "recall", "coverage", "cond. acc.", "zero pixels", "several ink pieces"]
    lines = ["# Sampling benchmark", "",
             f"Checkpoint: {meta['checkpoint']} (step {checkpoint.step}); guidance w in {{{args.guidance}}}; batch "
             f"{args.batch_size}; {machine['threads']} CPU threads; torch {machine['torch']}; {meta['date']}.",
             "Every row is from the same run of `python benchmarks/sampling.py`; the speed-up is the ratio of "
             "wall times per image within it. FID is in the MNIST classifier's feature space against the 10,000 "
             "test digits; with N samples it is biased upwards, so compare rows of equal N only. Precision, recall "
             "and coverage rest on k-nearest-neighbour radii and mean little below a few thousand samples. "
             "Network passes count every visited timestep (the final denoise included) once per branch: a "
             "guided step (w other than 0 and 1) is two, unless the network takes w as an input (guidance-free "
             "training). Zero pixels: share of pixels exactly 0 (MNIST 80.7%); several ink pieces: share of digits "
             "whose ink (> 50) is in more than one 8-connected piece (MNIST 2.6%).", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        reference = full.get(row["guidance"])
        cells = [f"{row['guidance']:g}", row.get("interval", "all"), row["sampler"], str(row["steps"]),
                 row["spacing"], str(row["num"]),
                 f"{row['ms_per_image']:.1f}", f"{row['images_per_s']:.1f}", f"{row['passes_per_image']:.0f}",
                 "-" if reference is None else f"{reference['ms_per_image'] / row['ms_per_image']:.0f}x"]
        if with_quality:
            acc = row.get("conditional_accuracy")
            cells += [f"{row['fid']:.2f}", f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                      f"{row['coverage']:.3f}", "-" if acc is None else f"{acc:.3f}",
                      *(f"{100 * row[k]:.1f}%" if k in row else "-" for k in ("zero_pixels", "stray_ink"))]
        lines.append("| " + " | ".join(cells) + " |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
