"""Fresh noise on the last steps against stray ink: the SDE solver with its noise kept below a share
of T, against the default's deterministic walk, on the same digits.

    python benchmarks/stochastic_tail.py --arms 0.45:1:-,0.45:1.25:0.5-0.65 [--seeds 0,1] [--num 10000]

An arm is NOISE_BELOW:W:INTERVAL[:STEPS]: `dpm++2m-sde` (eta 1) with fresh noise only on the steps
leaving from t/T below NOISE_BELOW ('-': every step), guidance weight W on t/T in INTERVAL (LOW-HIGH;
'-': the default's), and STEPS (default 8), on the default's log-SNR floor and end point. Every arm
starts from the seed's noise, as the default's rows in solver.md do (`sampling.generate` draws all
starting noise first), so those rows are the comparator. Rows are appended to
benchmarks/results/stochastic_tail.jsonl; stochastic_tail.md is rewritten from all rows.
"""

from __future__ import annotations

import dataclasses

import paired

from mnist_diffusion import scoring
from mnist_diffusion.config import SampleConfig
from mnist_diffusion.pipeline import Pipeline


def arm_settings(defaults: SampleConfig, arm: str) -> tuple[SampleConfig, float | None]:
    """The defaults with one arm's NOISE_BELOW:W:INTERVAL[:STEPS] applied, and its noise_below."""
    below, weight, interval, *steps = arm.split(":")
    low, _, high = interval.partition("-")
    settings = dataclasses.replace(defaults, sampler="dpm++2m-sde", guidance=float(weight),
                                   guidance_interval=(float(low), float(high)) if interval != "-"
                                   else defaults.guidance_interval,
                                   steps=int(steps[0]) if steps else defaults.steps)
    return settings, None if below == "-" else float(below)


def main() -> None:
    parser = paired.parser(__doc__, "stochastic_tail", seeds="0")
    parser.add_argument("--arms", default="", help="NOISE_BELOW:W:INTERVAL[:STEPS], comma-separated (none: only "
                                                   "rewrite the table)")
    args = parser.parse_args()
    pipe = Pipeline.load(device="cpu")
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    mnist = paired.reference(test_images)
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in filter(None, args.arms.split(",")):
            settings, below = arm_settings(pipe.defaults, arm)
            row = paired.paired_row(pipe, evaluator, settings, args.num, seed=seed, eta=1.0, noise_below=below)
            paired.append(args.out, {"model": paired.shipped_name(), "noise_below": below,
                                     "interval": settings.guidance_interval} | row)
    intro = ("`python benchmarks/stochastic_tail.py --arms NOISE_BELOW:W:INTERVAL[:STEPS] --seeds S`: "
             "`dpm++2m-sde` (eta 1) with fresh noise only on the steps leaving from t/T below NOISE_BELOW, "
             "on the default's log-SNR floor and end point, bf16, the same starting noise and labels as the "
             "default's rows of the same seed in [solver.md](solver.md). Each row's generate s is wall time "
             "on a machine that may have been doing other work. " + paired.mnist_sentence(mnist))
    paired.write_scores(args.out, "Fresh noise on the last steps", intro,
                        ["date", "model", "noise below", "w", "guided on", "steps", "passes", "N", "seed"],
                        lambda r: [r["date"], r["model"], r["noise_below"] or "every step", r["w"],
                                   "-".join(map(str, r["interval"])) if r["w"] != 1 else "unguided", r["steps"],
                                   r["passes"], r["num"], r["seed"]])


if __name__ == "__main__":
    main()
