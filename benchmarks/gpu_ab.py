"""Recipe A/B on a GPU at this CPU's budget, and the default recipe's speed on the GPU.

A GPU minute is about an hour of this 2-core CPU, so many recipes fit in one short GPU session.
Each recipe trains for the optimizer steps that the CPU budget buys it: `--steps` for the default
recipe (1,880 steps = 60 minutes on one core at batch 128, the shipped model's budget), scaled by
the default's training FLOPs per image over the recipe's (so a wider network gets fewer steps, as it
would on the CPU, where training runs at about the same FLOP rate for every recipe: training.md).
The recipes (benchmarks/train_budget.py's RECIPES) train side by side, one process each:

    python benchmarks/gpu_ab.py ab --recipes default,v,lognormal-v --steps 1880 [--num 2000]
    python benchmarks/gpu_ab.py speed --seconds 60 [--every 15]
    python benchmarks/gpu_ab.py samplers --checkpoint PATH --plan "dpm++2m:8:1.25:0.3-0.7,ddpm:1000:1:all"
    python benchmarks/gpu_ab.py report

`ab` scores each recipe's final EMA weights with the default sampler (10 network passes per digit)
and with the same sampler at 50 steps (the reference of issue 13's sampler target), `--num` digits,
1/10 of each digit, against MNIST's test set with `mnist-diffusion evaluate`'s code. `speed` trains
the default recipe alone for `--seconds`, scores its EMA weights every `--every` seconds the same
way, and times `mnist-diffusion evaluate --num 10000` of the last one (generation and scoring).
`samplers` scores one checkpoint under several sampler settings (any device; it is how the CPU's
bf16 and SDE measurements of training.md were made too), to tell the network's limits from the
sampler's. Results go to `runs/ab/*.json`; `report` appends a dated section to
benchmarks/results/training.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from train_budget import RECIPES, evaluator_and_train_images, train_flops_per_image

from mnist_diffusion import options, scoring
from mnist_diffusion.checkpoint import export_model, load_checkpoint
from mnist_diffusion.config import FEW_STEPS, SampleConfig
from mnist_diffusion.data import NUM_CLASSES, load_mnist, to_uint8
from mnist_diffusion.devices import pick_device
from mnist_diffusion.evaluate import Evaluator, ScoreRow
from mnist_diffusion.sampling import Guidance, count_passes, generate
from mnist_diffusion.schedule import NoiseSchedule
from mnist_diffusion.train import Trainer
from mnist_diffusion.unet import UNet

RESULTS = Path(__file__).parent / "results"
REFERENCE_STEPS = 50
METRICS = ("fid", "precision", "recall", "coverage", "conditional_accuracy", "zero_pixels", "stray_ink")


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _score(evaluator: Evaluator, model: UNet, schedule: NoiseSchedule, num: int, settings: SampleConfig,
           device: torch.device) -> dict:
    """`num` digits (1/10 of each) drawn with `settings`, scored: metrics, network passes per digit and
    seconds to generate."""
    labels = torch.arange(num) % NUM_CLASSES
    start = time.perf_counter()
    images = to_uint8(generate(model, schedule, num, settings, labels=labels, device=device,
                               generator=torch.Generator().manual_seed(0)))
    seconds = time.perf_counter() - start
    row: ScoreRow = evaluator.score("model", images, labels, memorize=False)[0]
    plan = Guidance(True, settings.guidance, settings.guidance_interval, model.config.guidance_input)
    steps = settings.steps or FEW_STEPS
    return {k: getattr(row, k) for k in METRICS} | {"sampler_steps": steps, "passes": count_passes(schedule, settings,
                                                                                                   plan),
                                                    "sampling_s": seconds}


# The product's defaults on a GPU: the batch a GPU fills.
GPU_DEFAULTS = SampleConfig(max_batch=500)


def cmd_one(args: argparse.Namespace) -> None:
    """Train one recipe for its share of the budget, then score it (a child of `ab`)."""
    device = pick_device(args.device)
    model_config, diffusion_config, train_config = RECIPES[args.recipe]
    flops = train_flops_per_image(model_config, diffusion_config, train_config)
    steps = round(args.steps * train_flops_per_image(*RECIPES["default"]) / flops)
    run_dir = Path(args.run_root) / args.recipe
    images, labels = load_mnist(args.data_root, "train")
    config = replace(train_config, max_steps=steps, max_minutes=args.max_seconds and args.max_seconds / 60,
                     sample_every=10**9, checkpoint_every=10**9)
    trainer = Trainer(run_dir, model_config, diffusion_config, config, images=images, labels=labels,
                      device=str(device))
    result = trainer.run()
    checkpoint = trainer.make_checkpoint(result.elapsed_s)
    export_model(checkpoint, run_dir / "final.safetensors")
    model, schedule = checkpoint.build_model(), NoiseSchedule(diffusion_config)
    evaluator = evaluator_and_train_images(args)[0]
    out = {"recipe": args.recipe, "device": _device_name(device),
           "steps": result.step, "images_seen": result.images_seen, "train_s": round(result.elapsed_s, 1),
           "train_gflop_per_image": round(flops / 1e9, 3), "parameters": sum(p.numel() for p in model.parameters()),
           "default": _score(evaluator, model, schedule, args.num, GPU_DEFAULTS, device),
           "reference": _score(evaluator, model, schedule, args.num,
                               replace(GPU_DEFAULTS, steps=REFERENCE_STEPS), device), "num": args.num}
    (Path(args.run_root) / f"ab_{args.recipe}.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out), flush=True)


def cmd_ab(args: argparse.Namespace) -> None:
    """One child process per recipe, all at once; each writes runs/ab/ab_<recipe>.json."""
    Path(args.run_root).mkdir(parents=True, exist_ok=True)
    children = []
    for recipe in args.recipes.split(","):
        if recipe not in RECIPES:
            sys.exit(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        log = open(Path(args.run_root) / f"ab_{recipe}.log", "w")  # noqa: SIM115 (closed below)
        command = [sys.executable, __file__, "--data-root", args.data_root, "--run-root", args.run_root, "one",
                   "--recipe", recipe, "--steps", str(args.steps), "--num", str(args.num), "--device", args.device]
        if args.max_seconds:
            command += ["--max-seconds", str(args.max_seconds)]
        children.append((recipe, log, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                       env=os.environ | {"OMP_NUM_THREADS": "1"})))
    for recipe, log, child in children:
        child.wait()
        log.close()
        print(recipe, "exit", child.returncode, flush=True)


def cmd_speed(args: argparse.Namespace) -> None:
    """The default recipe alone on the device: images/s, FID against seconds, 10,000 digits timed."""
    device = pick_device(args.device)
    model_config, diffusion_config, train_config = RECIPES["default"]
    run_dir = Path(args.run_root) / "speed"
    images, labels = load_mnist(args.data_root, "train")
    config = replace(train_config, max_minutes=args.seconds / 60, sample_every=10**9, checkpoint_every=10**9,
                     log_every=10)
    trainer = Trainer(run_dir, model_config, diffusion_config, config, images=images, labels=labels,
                      device=str(device))
    snapshots, next_point = [], [args.every]

    def snapshot(row: dict) -> None:
        if row["elapsed_s"] >= next_point[0]:
            path = run_dir / f"at_{row['elapsed_s']:06.1f}s.safetensors"  # a copy: the live weights move on
            export_model(trainer.make_checkpoint(row["elapsed_s"]), path)
            snapshots.append((row["elapsed_s"], row["step"], load_checkpoint(path)))
            next_point[0] += args.every

    trainer.on_log = snapshot
    result = trainer.run()
    final = trainer.make_checkpoint(result.elapsed_s)
    if not snapshots or snapshots[-1][1] != result.step:
        snapshots.append((result.elapsed_s, result.step, final))
    export_model(final, run_dir / "final.safetensors")
    evaluator, schedule = evaluator_and_train_images(args)[0], NoiseSchedule(diffusion_config)
    curve = [{"seconds": round(s, 1), "steps": step, "images": step * config.batch_size,
              **_score(evaluator, c.build_model(), schedule, args.num, GPU_DEFAULTS, device)}
             for s, step, c in snapshots]
    start = time.perf_counter()
    scoring.evaluate_checkpoint(run_dir / "final.safetensors", args.eval_num, run_dir / "eval", device=str(device))
    report = json.loads((run_dir / "eval" / "report.json").read_text())
    out = {"device": _device_name(device),
           "train_s": round(result.elapsed_s, 1), "steps": result.step, "images_seen": result.images_seen,
           "images_per_s": round(result.images_seen / result.elapsed_s, 1), "curve": curve, "num": args.num,
           "evaluate_s": round(time.perf_counter() - start, 1), "evaluate": report}
    (Path(args.run_root) / "speed.json").write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "evaluate"}), flush=True)


def cmd_samplers(args: argparse.Namespace) -> None:
    """Score one checkpoint under several sampler settings (SAMPLER:STEPS:W:INTERVAL[:raw][:eta=E][:bf16],
    INTERVAL LOW,HIGH or all, the command line's syntax; settings separated by ';'; raw = the weights
    without EMA; eta for ddim and dpm++2m-sde; bf16 = the network in bfloat16, else fp32), each with
    the product's other defaults, to tell the network's limits from the sampler's."""
    device = pick_device(args.device)
    Path(args.run_root).mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(args.checkpoint)
    schedule, evaluator = NoiseSchedule(checkpoint.diffusion_config), evaluator_and_train_images(args)[0]
    for setting in args.plan.split(";"):
        sampler, steps, guidance, interval, *extra = setting.split(":")
        span = options.guidance_interval(interval)
        eta = next((float(e[4:]) for e in extra if e.startswith("eta=")), None)
        settings = SampleConfig(sampler=sampler, steps=int(steps), guidance=float(guidance), guidance_interval=span,
                                max_batch=args.batch_size, eta=eta, precision="bf16" if "bf16" in extra else "fp32")
        scored = _score(evaluator, checkpoint.build_model(use_ema="raw" not in extra), schedule, args.num, settings,
                        device)
        out = {"setting": setting, "passes": scored["passes"], "sampling_s": round(scored["sampling_s"], 2),
               **{k: round(scored[k], 4) for k in METRICS}}
        with open(Path(args.run_root) / "samplers.jsonl", "a") as f:
            f.write(json.dumps(out) + "\n")
        print(json.dumps(out), flush=True)


def _cells(m: dict) -> str:
    return " | ".join(f"{m[k]:.3f}" for k in METRICS[:4]) + \
        f" | {100 * m['conditional_accuracy']:.2f}% | {100 * m['zero_pixels']:.1f}% | {100 * m['stray_ink']:.1f}%"


def cmd_report(args: argparse.Namespace) -> None:
    """Append the A/B table and the speed run to training.md."""
    root = Path(args.run_root)
    rows = [json.loads(p.read_text()) for p in sorted(root.glob("ab_*.json"))]
    rows.sort(key=lambda r: r["default"]["fid"])
    lines = ["", f"## {time.strftime('%Y-%m-%d %H:%M')}: recipe A/B on a GPU at the CPU's budget", ""]
    if rows:
        r0 = rows[0]
        lines += [f"Machine: {r0['device']}, all recipes side by side (one process each, "
                  "`python benchmarks/gpu_ab.py ab --recipes ... --steps S --num N`). Each recipe trained for the "
                  "steps the default's S buys at its FLOPs per image; N digits (1/10 each) scored against "
                  f"MNIST's test set. Default sampling: {GPU_DEFAULTS.summary()} (10 passes); reference: the "
                  f"same at {REFERENCE_STEPS} steps.", "",
                  "| recipe | steps | images | GFLOP/img | FID | precision | recall | coverage | accuracy | "
                  "zero px | ink pieces | reference FID | default / reference |", "|" + "---|" * 13]
        for r in rows:
            d, ref = r["default"], r["reference"]
            lines.append(f"| {r['recipe']} | {r['steps']} | {r['images_seen']:,} | {r['train_gflop_per_image']} | "
                         f"{_cells(d)} | {ref['fid']:.3f} | {d['fid'] / ref['fid']:.2f}x |")
        lines.append(f"\nN = {r0['num']}.")
    speed_path = root / "speed.json"
    if speed_path.exists():
        s = json.loads(speed_path.read_text())
        model = s["evaluate"]["rows"][0]
        lines += ["", f"Default recipe alone on the {s['device']} (`python benchmarks/gpu_ab.py speed`): "
                  f"{s['images_per_s']:,} images/s, {s['steps']} steps in {s['train_s']} s. "
                  f"EMA weights along the way (N={s['num']}, default sampler):", "",
                  "| seconds | steps | images | FID | precision | recall | coverage | accuracy | zero px "
                  "| ink pieces |",
                  "|" + "---|" * 10]
        for p in s["curve"]:
            lines.append(f"| {p['seconds']} | {p['steps']} | {p['images']:,} | {_cells(p)} |")
        lines += ["", f"`mnist-diffusion evaluate --num {model['count']}` of the last: FID {model['fid']:.3f}, "
                  f"accuracy "
                  f"{100 * model['conditional_accuracy']:.2f}%; {model['count']:,} digits generated in "
                  f"{s['evaluate']['settings']['generation_s']:.1f} s; the whole command {s['evaluate_s']} s."]
    with open(RESULTS / "training.md", "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--run-root", default="runs/ab")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, func in (("ab", cmd_ab), ("one", cmd_one)):
        p = commands.add_parser(name)
        p.add_argument("--recipes" if name == "ab" else "--recipe", required=True)
        p.add_argument("--steps", type=int, default=1880, help="the default recipe's steps (the others: same FLOPs)")
        p.add_argument("--num", type=int, default=2000)
        p.add_argument("--device", default="auto")
        p.add_argument("--max-seconds", type=float, help="stop training here if the steps are not done (a safety "
                       "cap: the report shows the steps reached)")
        p.set_defaults(func=func)
    p = commands.add_parser("speed")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--every", type=float, default=15)
    p.add_argument("--eval-num", type=int, default=10_000, help="digits of the timed `mnist-diffusion evaluate`")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_speed)
    p = commands.add_parser("samplers")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--plan", required=True, help="SAMPLER:STEPS:W:INTERVAL[:raw][:eta=E][:bf16], ';'-separated")
    p.add_argument("--num", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_samplers)
    p = commands.add_parser("report")
    p.set_defaults(func=cmd_report)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
