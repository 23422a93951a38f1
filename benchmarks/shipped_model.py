"""The shipped model's full evaluation: the one file its numbers come from.

    python benchmarks/shipped_model.py [--num 10000] [--checkpoint CANDIDATE --out PATH]

Runs what `mnist-diffusion evaluate --num 10000` runs (the library calls behind it) on the shipped
model with the default sampling settings, and writes benchmarks/results/shipped_model.json (every
row, the settings, the machine and the date) and shipped_model.md, with the pixel histogram
against MNIST's test digits and every quality target of the project met or missed. The README, the
model card and the docs quote these numbers; `tests/test_docs.py` fails when a quote differs from
this file. `--checkpoint` scores a candidate the same way (give it its own `--out`). The same digits
drawn with `--reference-steps` (50) steps of the same sampling are the reference the default is held
to (FID within 10%); `--reference-steps 0` skips them (they take about six times as long).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from report import markdown_table, write_report

from mnist_diffusion import scoring
from mnist_diffusion.config import SampleConfig
from mnist_diffusion.pipeline import Pipeline

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("fid", "precision", "recall", "density", "coverage", "conditional_accuracy", "near_copy_rate",
           "zero_pixels", "stray_ink")
# Grey-level bands of the pixel histogram: black, the faint haze, anti-aliased edges, strokes,
# MNIST's stroke cores (251-254) and pure white.
BANDS = ((0, 0), (1, 5), (6, 50), (51, 250), (251, 254), (255, 255))
MAX_PASSES, MAX_SECONDS_PER_10K = 10, 300
REFERENCE_MARGIN = 0.10  # the default's FID may exceed the many-step reference's by this share


def histogram(images: torch.Tensor) -> list[float]:
    """Share of pixels in each of `BANDS`."""
    return [((images >= low) & (images <= high)).double().mean().item() for low, high in BANDS]


def targets(model: dict, floor: dict, test: dict, settings: dict, num: int,
            reference: dict | None = None) -> list[tuple[str, str, str, bool]]:
    """(target, goal, reached, met) for each quality target the project holds its shipped model to;
    `reference` (its steps and FID) adds the many-step reference's."""
    seconds = settings["generation_s"] * 10_000 / num

    def share(name: str) -> str:
        return f"{100 * model[name]:.1f}% (MNIST {100 * test[name]:.1f}%)"

    ratio = model["fid"] / floor["fid"]
    rows = [("FID", f"<= 3x the floor ({3 * floor['fid']:.3f})", f"{model['fid']:.3f} = {ratio:.2f}x", ratio <= 3)]
    rows += [(name, f">= 95% of the floor's ({0.95 * floor[name]:.3f})", f"{model[name]:.3f} = "
              f"{100 * model[name] / floor[name]:.0f}%", model[name] >= 0.95 * floor[name])
             for name in ("precision", "recall", "coverage")]
    rows += [("read as asked", ">= 99%", f"{100 * model['conditional_accuracy']:.2f}%",
              model["conditional_accuracy"] >= 0.99),
             ("near copies", "none", f"{100 * model['near_copy_rate']:.2f}%", model["near_copy_rate"] == 0),
             ("passes per digit", f"<= {MAX_PASSES}", str(settings["network_passes_per_digit"]),
              settings["network_passes_per_digit"] <= MAX_PASSES),
             ("10,000 digits", f"<= {MAX_SECONDS_PER_10K} s", f"{seconds:.0f} s", seconds <= MAX_SECONDS_PER_10K),
             ("exact-zero pixels", "within 5 points of MNIST's", share("zero_pixels"),
              abs(model["zero_pixels"] - test["zero_pixels"]) <= 0.05),
             ("pure-white pixels", "within 1 point of MNIST's", share("white_pixels"),
              abs(model["white_pixels"] - test["white_pixels"]) <= 0.01),
             ("digits in > 1 ink piece", "within 2 points of MNIST's", share("stray_ink"),
              abs(model["stray_ink"] - test["stray_ink"]) <= 0.02)]
    if reference is not None:
        excess = model["fid"] / reference["fid"] - 1
        rows.append((f"FID against {reference['steps']} steps", f"within {100 * REFERENCE_MARGIN:.0f}%",
                     f"{model['fid']:.3f} against {reference['fid']:.3f} ({100 * excess:+.1f}%)",
                     excess <= REFERENCE_MARGIN))
    return [(name, goal, reached, met) for name, goal, reached, met in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--checkpoint", default=None, help="a candidate model (default: the shipped one)")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(RESULTS / "shipped_model"))
    parser.add_argument("--reference-steps", type=int, default=50, help="steps of the reference draw (0: none)")
    args = parser.parse_args()
    started = time.time()
    pipe = Pipeline.load(args.checkpoint, device="cpu")
    evaluator, train_images, test_images = scoring.evaluator_for(args.data_root)
    drawn = scoring.draw_for_scoring(pipe, args.num, pipe.defaults,
                                     checkpoint_name=args.checkpoint or "shipped default")
    with tempfile.TemporaryDirectory() as tmp:
        report = scoring.score(drawn, evaluator, train_images, test_images, tmp)
    reference = None
    if args.reference_steps:
        many = dataclasses.replace(pipe.defaults, steps=args.reference_steps)
        drawn_many = scoring.draw_for_scoring(pipe, args.num, many,
                                              checkpoint_name=args.checkpoint or "shipped default")
        row, _ = evaluator.score(drawn_many.name, drawn_many.images, drawn_many.labels, memorize=False)
        reference = {"name": row.name, "steps": args.reference_steps, "fid": row.fid,
                     "passes_per_digit": drawn_many.settings["network_passes_per_digit"],
                     "generation_s": drawn_many.settings["generation_s"]}
    rows = {row.name: dataclasses.asdict(row) for row in report.rows}
    model, floor = report.rows[0], report.rows[1]
    pixels = {"model": histogram(drawn.images), "MNIST test": histogram(test_images)}
    white = {"white_pixels": pixels["model"][-1]}
    command = "python benchmarks/shipped_model.py" + (f" --checkpoint {args.checkpoint}" if args.checkpoint else "")
    payload = {"date": time.strftime("%Y-%m-%d"), "command": f"{command} --num {args.num}",
               "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                          f"torch {torch.__version__}",
               "sampling": dataclasses.asdict(SampleConfig()), "settings": report.settings,
               "model": dataclasses.asdict(model) | white, "floor": dataclasses.asdict(floor), "rows": rows,
               "pixel_bands": [f"{low}-{high}" if low != high else str(low) for low, high in BANDS],
               "pixel_histogram": pixels, "reference": reference, "minutes": round((time.time() - started) / 60, 1)}
    test_row = rows["MNIST test (copy reference)"] | {"white_pixels": pixels["MNIST test"][-1]}
    goals = targets(payload["model"], payload["floor"], test_row, report.settings, args.num, reference)
    payload["targets"] = [{"target": n, "goal": g, "reached": r, "met": m} for n, g, r, m in goals]
    settings = report.settings
    table = [[row.name, *(f"{getattr(row, key):.4g}" if getattr(row, key) is not None else "-" for key in COLUMNS)]
             for row in report.rows]
    lines = [f"# The shipped model's evaluation ({payload['date']})", "",
             f"`{payload['command']}` on {payload['machine']}: {settings['network_passes_per_digit']} "
             f"network passes per digit ({settings['sampler']}, {settings['steps']} steps, guidance "
             f"{settings['guidance']} on t/T {settings['guidance_interval']}, {settings['precision']}"
             f"), {args.num:,} digits in an even mix; generating took {settings['generation_s']:.0f} s, "
             f"scoring {settings['scoring_s']:.0f} s. FID is in the shipped classifier's feature space "
             f"against the 10,000 MNIST test digits; the floor is 10,000 training digits.", "",
             *markdown_table(["set", *COLUMNS], table), "",
             f"FID is {model.fid / floor.fid:.2f}x the floor.", "", "## Pixel histogram", "",
             "Share of the pixels in each grey-level band (0 black, 255 white):", "",
             *markdown_table(["set", *payload["pixel_bands"]],
                             [[name, *(f"{100 * share:.1f}%" for share in shares)] for name, shares in pixels.items()]),
             "", "## Targets", "",
             *markdown_table(["target", "goal", "reached", "met"],
                             [[n, g, r, "yes" if m else "**no**"] for n, g, r, m in goals])]
    write_report(args.out, payload, lines)
    print(json.dumps({"fid": model.fid, "floor": floor.fid, "accuracy": model.conditional_accuracy}))


if __name__ == "__main__":
    main()
