"""How many torch threads to use: the same sampling run with 1 thread and with all cores, on an idle
machine and beside a busy program (a pure-Python loop on one core, as another user's job would be).

    python benchmarks/threads.py [--digits 16] [--rounds 3]

"auto" is `--threads auto`: the cores other programs leave idle when the process starts.
Each configuration runs in its own subprocess (torch fixes its thread pool at start), rounds
alternate so a busy moment hurts all alike, and the median seconds of each are reported with the
ratio to one thread in the same condition. Writes benchmarks/results/threads.md and .json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from report import markdown_table, write_report

RUN = """
import sys, time, torch
from mnist_diffusion.devices import choose_threads
torch.set_num_threads(choose_threads(sys.argv[1] if sys.argv[1] == "auto" else int(sys.argv[1])))
from mnist_diffusion import Pipeline
pipe = Pipeline.load(device="cpu")
pipe.sample(2, seed=0)  # warm-up
start = time.perf_counter()
pipe.sample(int(sys.argv[2]), seed=1)
print(time.perf_counter() - start)
"""
BURN = "while True:\n    pass\n"


def timed(threads: int | str, digits: int) -> float:
    result = subprocess.run([sys.executable, "-c", RUN, str(threads), str(digits)], capture_output=True, text=True,
                            check=True)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "threads"))
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    counts: list[int | str] = [*sorted({1, cores}), "auto"]
    times: dict[tuple[str, int | str], list[float]] = {}
    for _ in range(args.rounds):
        for condition in ("idle", "busy"):
            burner = subprocess.Popen([sys.executable, "-c", BURN]) if condition == "busy" else None
            try:
                for threads in counts:
                    times.setdefault((condition, threads), []).append(timed(threads, args.digits))
            finally:
                if burner is not None:
                    burner.kill()
                    burner.wait()
    medians = {key: statistics.median(values) for key, values in times.items()}
    rows = [[condition, threads, f"{medians[(condition, threads)]:.2f}",
             f"{medians[(condition, threads)] / medians[(condition, 1)]:.2f}x"]
            for condition in ("idle", "busy") for threads in counts]
    lines = [f"# Torch threads while sampling ({time.strftime('%Y-%m-%d')})", "",
             f"`python benchmarks/threads.py --digits {args.digits} --rounds {args.rounds}` on {cores} cores: the "
             f"shipped model draws {args.digits} digits with the default settings; median of {args.rounds} "
             f"alternating rounds. Busy: one other process spinning on one core.", "",
             *markdown_table(["machine", "threads", "seconds", "time vs 1 thread"], rows)]
    write_report(args.out, {"cores": cores, "digits": args.digits, "times": {f"{c}/{t}": v for (c, t), v in
                                                                           times.items()}}, lines)


if __name__ == "__main__":
    main()
