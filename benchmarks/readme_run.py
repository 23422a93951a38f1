"""The README's training example, run as written, and what its digits are worth.

    python benchmarks/readme_run.py [--run-root runs/readme_run] [--num 2000]

Reads the `mnist-diffusion train ...` line of the README's command list, runs it (its `--run-dir`
moved under RUN_ROOT; a finished run is resumed, which trains nothing more), then scores the newest
checkpoint as `mnist-diffusion evaluate --num NUM` does. Writes benchmarks/results/readme_run.{md,json}:
how long the run took (wall time, and at the median pace of its log, which is what an idle machine
gives), and how often the shipped classifier reads its digits as the digit asked for.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from pathlib import Path

from report import markdown_table, write_report

from mnist_diffusion import scoring
from mnist_diffusion.cli import main as command_line
from mnist_diffusion.rundir import RunDirectory

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def readme_train_command() -> list[str]:
    """The arguments of the README's `mnist-diffusion train` line, as a user would paste it."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("mnist-diffusion train "):
            return shlex.split(line.split(" #")[0])[1:]
    raise SystemExit("the README has no `mnist-diffusion train` line")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--run-root", default="runs/readme_run", help="where the README's run directory goes")
    parser.add_argument("--num", type=int, default=2000, help="digits to score")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--out", default=str(RESULTS / "readme_run"))
    args = parser.parse_args()
    argv = readme_train_command()
    readme_run_dir = argv[argv.index("--run-dir") + 1]
    run_dir = Path(args.run_root) / Path(readme_run_dir).name
    argv[argv.index("--run-dir") + 1] = str(run_dir)
    if command_line([*argv, "--data-root", args.data_root]) != 0:
        raise SystemExit("the README's training command failed")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    images = rows[-1]["step"] * json.loads((run_dir / "config.json").read_text())["train"]["batch_size"]
    pace = statistics.median(row["images_per_s"] for row in rows)
    checkpoint = RunDirectory(run_dir).checkpoints()[-1][1]
    report = scoring.evaluate_checkpoint(checkpoint, args.num, Path(args.run_root) / "eval", data_root=args.data_root,
                                         device="cpu")
    model, floor = report.rows[0], report.rows[1]
    result = {"command": "mnist-diffusion " + shlex.join(readme_train_command()), "steps": rows[-1]["step"],
              "images": images, "wall_minutes": round(rows[-1]["elapsed_s"] / 60, 1),
              "median_images_per_s": round(pace), "minutes_at_median_pace": round(images / pace / 60, 1),
              "num": args.num, "read_as_asked": model.conditional_accuracy, "fid": model.fid,
              "floor_fid": floor.fid, "date": time.strftime("%Y-%m-%d")}
    table = markdown_table(["steps", "images", "wall minutes", "minutes at the median pace", "read as asked",
                            f"FID (N = {args.num:,})", "floor FID (10,000 training digits)"],
                           [[result["steps"], f"{images:,}", result["wall_minutes"], result["minutes_at_median_pace"],
                             f"{100 * result['read_as_asked']:.1f}%", f"{result['fid']:.3f}",
                             f"{result['floor_fid']:.3f}"]])
    write_report(args.out, result, [
        f"# The README's training example ({result['date']})", "",
        f"`python benchmarks/readme_run.py --num {args.num}` ran the README's line `{result['command']}` "
        f"(its run directory under {args.run_root}) and scored its newest checkpoint with the default sampling, as "
        f"`mnist-diffusion evaluate --num {args.num}` does. Wall minutes are as the run went on this machine, "
        f"beside other work; the median pace of its log ({result['median_images_per_s']} images/s) is what the "
        "machine gives when nothing else runs. FID at this N is biased upwards: compare it only with FIDs at the "
        "same N, not with the shipped model's 10,000-digit figure.", "", *table])


if __name__ == "__main__":
    main()
