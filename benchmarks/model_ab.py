"""Two (or more) models compared on the same digits: each model draws NUM digits with the default
sampling from each sampling seed (the same noise and labels for every model at a seed), scored as
`mnist-diffusion evaluate` scores. The spread over seeds says how far a difference must be to mean
anything at this N.

    python benchmarks/model_ab.py --models OLD,NEW [--seeds 0,1] [--num 10000]

`shipped` names the shipped model. Rows are appended to benchmarks/results/model_ab.jsonl; model_ab.md
is rewritten from all rows, with each model's mean and range over the seeds it was drawn with.
"""

from __future__ import annotations

import statistics

import paired

from mnist_diffusion import scoring
from mnist_diffusion.pipeline import Pipeline

METRICS = ("fid", "precision", "recall", "coverage", "acc", "zero", "white", "stray")


def cell(values: list[float], key: str) -> str:
    scale, digits = (100, 2) if key == "acc" else (100, 1) if key in ("zero", "white", "stray") else (1, 3)
    mean = f"{scale * statistics.fmean(values):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ({scale * min(values):.{digits}f}-{scale * max(values):.{digits}f})"


def main() -> None:
    parser = paired.parser(__doc__, "model_ab", seeds="0,1")
    parser.add_argument("--models", default="", help="checkpoints or `shipped`, comma-separated (none: only "
                                                      "rewrite the table)")
    args = parser.parse_args()
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    mnist = paired.reference(test_images)
    for model in filter(None, args.models.split(",")):
        pipe = Pipeline.load(None if model == "shipped" else model, device="cpu")
        for seed in (int(s) for s in args.seeds.split(",")):
            paired.append(args.out, {"model": model}
                          | paired.paired_row(pipe, evaluator, pipe.defaults, args.num, seed=seed))
    groups: dict[tuple[str, str, str, float, int], list[dict]] = {}
    for row in paired.rows(args.out):
        key = (row["date"], paired.short(row["model"]), paired.walk(row), row["w"], row["num"])
        groups.setdefault(key, []).append(row)
    table = [[date, model, walk, w, num, ", ".join(str(r["seed"]) for r in group),
              *(cell([r[key] for r in group], key) for key in METRICS), group[0]["passes"]]
             for (date, model, walk, w, num), group in groups.items()]
    intro = ("`python benchmarks/model_ab.py --models A,B --seeds 0,1`: each model with the default sampling, the same "
             "noise and labels for every model at a seed; mean over the seeds, (lowest-highest) beside it. Percent "
             "columns in %. " + paired.mnist_sentence(mnist))
    paired.write_table(args.out, "Models compared on the same digits", intro,
                       ["date", "model", "walk", "w", "N", "seeds", "FID", "precision", "recall", "coverage",
                        "read as asked", "zero px", "white px", "several pieces", "passes"], table)


if __name__ == "__main__":
    main()
