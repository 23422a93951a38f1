"""Fewer passes by distillation (issue 32, route 1): students distilled from a teacher's default walk
(`mnist-diffusion train --teacher shipped --student-steps N`, progressive or with `--distillation
consistency`; any model can teach), each against the product's default: the shipped model's walk.

    python benchmarks/distill.py whole --student PATH [--num 10000] [--rounds 2]
        # one `sample` process per run, the shipped default and the student alternating, load included
    python benchmarks/distill.py full --student PATH [--num 10000] [--seeds 0,1]
        # the student's full evaluation against issue 32's targets, and what its training cost

The paired A/B (the same noise and labels; the teacher also walked as the student is, to show what the
training bought) is benchmarks/ab.py's, in results/distill_ab.md. Each part adds its section for its
student to results/distill-DATE.json and rewrites the .md from all of them. Run `whole` on an idle
machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from faster import draw_command, full_evaluation, goal_rows, machine
from report import markdown_table, write_report
from shipped_model import histogram

from mnist_diffusion.pipeline import Pipeline

RESULTS = Path(__file__).parent / "results"
DATE = "2026-12-07"  # the round the file belongs to; each section carries the day it was measured
OUT = RESULTS / f"distill-{DATE}"


def passes(model: str) -> int:
    pipe = Pipeline.load(None if model == "shipped" else model, device="cpu", threads=None)
    return pipe.passes(pipe.defaults, True)


def part_whole(args: argparse.Namespace) -> dict:
    """Wall seconds of one process drawing `num` digits with the model's own walk, as `sample` does."""
    models = {"shipped default": "shipped", "student": args.student}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):  # alternating, so a busy moment hurts both alike
            for name, model in models.items():
                start = time.perf_counter()
                subprocess.run(draw_command(args.num, "auto", False, f"{tmp}/d.png", model), check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                seconds[name].append(time.perf_counter() - start)
    return {"command": f"python benchmarks/distill.py whole --student {args.student} --num {args.num} "
                       f"--rounds {args.rounds}", "date": time.strftime("%Y-%m-%d"), "num": args.num,
            "rows": [{"run": name, "passes": passes(model), "seconds": seconds[name]}
                     for name, model in models.items()]}


def part_full(args: argparse.Namespace) -> dict:
    pipe = Pipeline.load(args.student, device="cpu")
    student = pipe.checkpoint
    runs, test_images = full_evaluation(pipe, args.num, args.seeds, "", args.data_root)
    train = student.train_config
    return {"command": f"python benchmarks/distill.py full --student {args.student} --num {args.num} "
                       f"--seeds {args.seeds}", "date": time.strftime("%Y-%m-%d"), "num": args.num,
            "threads": torch.get_num_threads(),
            "mnist_histogram": histogram(test_images), "runs": runs,
            "training": {"teacher": train.teacher if train else None, "step": student.step,
                         "images_seen": student.images_seen, "minutes": student.extra.get("elapsed_s", 0) / 60,
                         "student_steps": student.model_config.student_steps,
                         "student_sampler": student.model_config.student_sampler,
                         "recipe": {k: getattr(train, k) for k in ("batch_size", "lr", "warmup_steps", "seed")}
                         if train else {}}}


METHODS = {"ddim": "progressive distillation", "consistency": "consistency distillation"}


def render(sections: dict) -> list[str]:
    lines = [f"# Fewer passes by distillation ({DATE})", "",
             f"Made by `benchmarks/distill.py` on {sections.get('machine', machine())}; each section gives its "
             "command. Each student names its teacher (a model at its default walk); a student draws with its own "
             "(`ModelConfig.student_steps` and `student_sampler`: one pass per step). The paired A/B, with the "
             "teacher walked as a student is: [distill_ab.md](distill_ab.md).", ""]
    for student, parts in sections["students"].items():
        lines += render_student(student, parts)
    return lines


def render_student(student: str, parts: dict) -> list[str]:
    """One student's sections: its training, its full evaluation against issue 32's goal, and the
    whole-process timing against the shipped default."""
    dates = sorted({part["date"] for part in parts.values()})
    lines = [f"## `{student}` (measured {', '.join(dates)})", ""]
    if "full" in parts:
        f = parts["full"]
        t = f["training"]
        method = METHODS[t.get("student_sampler", "ddim")]
        lines += [f"Distilled from `{t['teacher']}` by {method} into {t['student_steps']} passes per digit: "
                  f"{t['step']:,} steps, {t['images_seen']:,} training digits, {t['minutes']:.0f} minutes of "
                  f"training on this machine (recipe: {', '.join(f'{k} {v}' for k, v in t['recipe'].items())}).", "",
                  "### Its full evaluation", "", f"`{f['command']}`: {f['num']:,} digits per seed, "
                  "an even mix, drawn with the student's own walk and scored as `mnist-diffusion evaluate` "
                  "scores.", ""]
        keys = ("fid", "precision", "recall", "coverage", "conditional_accuracy", "zero_pixels", "white_pixels",
                "stray_ink")
        rows = [[r["seed"], r["generation_s"], f"{r['scores']['fid']:.4f}",
                 f"{r['scores']['fid'] / r['floor_fid']:.2f}x", *(f"{r['scores'][k]:.4f}" for k in keys[1:])]
                for r in f["runs"]]
        lines += [*markdown_table(["seed", "generate s", "FID", "FID / floor", *keys[1:]], rows), ""]
        goal = {"pixels": f} | ({"whole": {"rows": [{"run": "student, one process", "seconds": min(row["seconds"])}
                                                    for row in parts["whole"]["rows"] if row["run"] == "student"]}}
                                if "whole" in parts else {})
        lines += ["Against issue 32's goal (seed 0):", "",
                  *markdown_table(["target", "goal", "reached", "met"], goal_rows(goal)), ""]
    if "whole" in parts:
        w = parts["whole"]
        lines += ["### One `sample` process, the shipped default and the student", "",
                  f"`{w['command']}`: wall seconds of one process drawing {w['num']:,} digits with the model's "
                  "own walk (threads `auto`, model load and the grid included), the runs alternating.", "",
                  *markdown_table(["model", "passes per digit", "seconds, each run", "median"],
                                  [[r["run"], r["passes"], ", ".join(f"{s:.0f}" for s in r["seconds"]),
                                    f"{statistics.median(r['seconds']):.0f}"] for r in w["rows"]]), ""]
    return lines


def save(student: str, part: str, section: dict) -> None:
    """Put `section` under its student and part in OUT.json beside the earlier ones; rewrite OUT.md."""
    path = OUT.with_suffix(".json")
    sections = json.loads(path.read_text()) if path.exists() else {}
    sections.setdefault("students", {}).setdefault(student, {})[part] = section
    sections["machine"] = machine()
    write_report(OUT, sections, render(sections))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    whole = parts.add_parser("whole")
    whole.add_argument("--num", type=int, default=10_000)
    whole.add_argument("--rounds", type=int, default=2)
    full = parts.add_parser("full")
    full.add_argument("--num", type=int, default=10_000)
    full.add_argument("--seeds", default="0,1")
    full.add_argument("--data-root", default="data")
    for part in (whole, full):
        part.add_argument("--student", required=True, help="the distilled checkpoint")
    args = parser.parse_args()
    save(args.student, args.part, {"whole": part_whole, "full": part_full}[args.part](args))


if __name__ == "__main__":
    main()
