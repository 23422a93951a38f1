"""Which ODE solver, step spacing and end point draw the best digits at the default's cost: the same
digits (an even mix, from each of --seeds) drawn with each arm's sampler, log-SNR floor, last
timestep, guidance weight and steps, scored as `mnist-diffusion evaluate` scores.

    python benchmarks/solver.py --arms dpm++2m:-10.2:12:1.15,unipc:-5:25:1.25,unipc:-5:25:1.25:50 [--seeds 0,1]

An arm is SAMPLER:FLOOR:LAST:W[:STEPS] (STEPS defaults to the default's 8). FLOOR is
`SampleConfig.log_snr_floor`: the "logsnr" spacing's first step jumps from pure noise to that
log-SNR and spreads the others evenly above it (-10.2 reaches down to log-SNR(T-1) of the linear
schedule, so every step is even: the spacing of DPM-Solver's paper). A 50-step arm is the reference
the default is held to (within 10% of its FID). Rows are appended to benchmarks/results/solver.jsonl;
solver.md is rewritten from all rows.
"""

from __future__ import annotations

import dataclasses

import paired

from mnist_diffusion import scoring
from mnist_diffusion.pipeline import Pipeline


def arm_settings(pipe: Pipeline, arm: str):
    """The defaults with one arm's SAMPLER:FLOOR:LAST:W[:STEPS] applied."""
    sampler, floor, last, weight, *steps = arm.split(":")
    return dataclasses.replace(pipe.defaults, sampler=sampler, log_snr_floor=float(floor), last_timestep=int(last),
                               guidance=float(weight), steps=int(steps[0]) if steps else pipe.defaults.steps)


def main() -> None:
    parser = paired.parser(__doc__, "solver", seeds="0")
    parser.add_argument("--arms", required=True, help="SAMPLER:FLOOR:LAST:W[:STEPS], comma-separated")
    parser.add_argument("--checkpoint", default=None, help="the model (default: the shipped one)")
    args = parser.parse_args()
    pipe = Pipeline.load(args.checkpoint, device="cpu")
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    mnist = paired.reference(test_images)
    model = paired.short(args.checkpoint) if args.checkpoint else paired.shipped_name()
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in args.arms.split(","):
            settings = arm_settings(pipe, arm)
            row = paired.paired_row(pipe, evaluator, settings, args.num, seed=seed)
            paired.append(args.out, {"model": model} | row)
    intro = ("`python benchmarks/solver.py --arms SAMPLER:FLOOR:LAST:W[:STEPS],... --seeds S,...`: the same "
             "digits (an even mix, drawn from the row's seed) in every arm, guidance on t/T 0.3-0.7, bf16 here; "
             "FLOOR is the log-SNR the first step jumps to (-10.2: even steps all the way, DPM-Solver's spacing). "
             "Each row's generate s is wall time on a machine that may have been doing other work. "
             + paired.mnist_sentence(mnist))
    paired.write_scores(args.out, "ODE solver, spacing and end point", intro,
                        ["date", "model", "sampler", "floor", "last t", "w", "steps", "passes", "N", "seed"],
                        lambda r: [r["date"], r["model"], r["sampler"], r["floor"], r["last_timestep"], r["w"],
                                   r["steps"], r["passes"], r["num"], r["seed"]])


if __name__ == "__main__":
    main()
