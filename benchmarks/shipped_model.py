"""The shipped model's full evaluation: the one file its numbers come from.

    python benchmarks/shipped_model.py [--num 10000]

Runs what `mnist-diffusion evaluate --num 10000` runs (the library call behind it) on the shipped
model with the default sampling settings, and writes benchmarks/results/shipped_model.json (every
row, the settings, the machine and the date) and shipped_model.md. The README, the model card and
the docs quote these numbers; `tests/test_docs.py` fails when a quote differs from this file.
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

RESULTS = Path(__file__).parent / "results"
COLUMNS = ("fid", "precision", "recall", "density", "coverage", "conditional_accuracy", "near_copy_rate",
           "zero_pixels", "stray_ink")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=10_000)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(RESULTS / "shipped_model"))
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        report = scoring.evaluate_checkpoint(None, args.num, tmp, data_root=args.data_root)
    rows = {row.name: dataclasses.asdict(row) for row in report.rows}
    model, floor = report.rows[0], report.rows[1]
    payload = {"date": time.strftime("%Y-%m-%d"), "command": f"python benchmarks/shipped_model.py --num {args.num}",
               "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
                          f"torch {torch.__version__}",
               "sampling": dataclasses.asdict(SampleConfig()), "settings": report.settings,
               "model": dataclasses.asdict(model), "floor": dataclasses.asdict(floor), "rows": rows,
               "minutes": round((time.time() - started) / 60, 1)}
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
             f"FID is {model.fid / floor.fid:.1f}x the floor."]
    write_report(args.out, payload, lines)
    print(json.dumps({"fid": model.fid, "floor": floor.fid, "accuracy": model.conditional_accuracy}))


if __name__ == "__main__":
    main()
