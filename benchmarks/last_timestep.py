"""Where the sampler's walk should end: the default sampling on the shipped model, ending at the
cleanest timestep (t = 0) or at a later one whose predicted clean image is returned (the residual
noise of t = 0 shows as a faint haze and saturated stroke cores), at one or more guidance weights.

    python benchmarks/last_timestep.py --runs 0:1.25,12:1.25,25:1.25,25:1.35,25:1.5 [--num 10000]

Each run draws NUM digits (an even mix, seed 0, the default sampler, steps, interval and precision)
and scores them as `mnist-diffusion evaluate` does, with the share of exact-zero and pure-white
pixels beside MNIST's. Rows are appended to benchmarks/results/last_timestep.jsonl
and the table benchmarks/results/last_timestep.md is rewritten from all rows.
"""

from __future__ import annotations

import dataclasses

import paired
from paired import paired_row

from mnist_diffusion import scoring
from mnist_diffusion.pipeline import Pipeline


def run(pipe: Pipeline, evaluator, last: int, weight: float, num: int) -> dict:
    row = paired_row(pipe, evaluator, dataclasses.replace(pipe.defaults, guidance=weight, last_timestep=last), num)
    return {"model": paired.shipped_name(), "last": last, "w": weight} | row


def main() -> None:
    parser = paired.parser(__doc__, "last_timestep")
    parser.add_argument("--runs", default="0:1.25,12:1.25", help="LAST:W pairs, comma-separated")
    args = parser.parse_args()
    pipe = Pipeline.load(device="cpu")
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    mnist = paired.reference(test_images)
    for pair in args.runs.split(","):
        last, weight = pair.split(":")
        paired.append(args.out, run(pipe, evaluator, int(last), float(weight), args.num))
    intro = ("`python benchmarks/last_timestep.py --runs LAST:W,...` on the shipped model (named by its weights' "
             "sha256): the default sampling of the day (8 steps of the row's sampler, guidance on t/T 0.3-0.7, bf16 "
             "here), ending at "
             "timestep LAST, 10,000 digits, seed 0. " + paired.mnist_sentence(mnist))
    paired.write_scores(args.out, "Where the sampling walk ends", intro, ["date", "model", "walk", "w", "N"],
                        lambda r: [r["date"], r["model"], paired.walk(r | {"last_timestep": r["last"]}), r["w"],
                                   r["num"]])


if __name__ == "__main__":
    main()
