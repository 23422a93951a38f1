"""Where the stray ink comes from: the same digits drawn with 8, 16 and 50 steps of the default ODE
solver (and without guidance). If the share of digits in more than one piece of ink stays as the
solver's error shrinks, the network draws it.

    python benchmarks/stray_ink.py [--checkpoint MODEL] [--steps 8,16,50] [--num 10000]

Every arm draws the same digits (an even mix, seed 0) with the default settings but the steps (and
guidance weight), scored as `mnist-diffusion evaluate` scores. "Several pieces": digits whose ink
(pixels above 50) falls in more than one 8-connected piece.
Rows are appended to benchmarks/results/stray_ink.jsonl; stray_ink.md is rewritten from all rows.
"""

from __future__ import annotations

import dataclasses

import paired

from mnist_diffusion import scoring
from mnist_diffusion.pipeline import Pipeline


def main() -> None:
    parser = paired.parser(__doc__, "stray_ink")
    parser.add_argument("--checkpoint", default=None, help="the model (default: the shipped one)")
    parser.add_argument("--steps", default="8,16,50", help="solver steps of each arm, comma-separated")
    parser.add_argument("--weights", default="", help="guidance weights of each arm (default: the default weight)")
    args = parser.parse_args()
    pipe = Pipeline.load(args.checkpoint, device="cpu")
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    mnist = paired.reference(test_images)
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [pipe.defaults.guidance]
    for weight in weights:
        for steps in (int(s) for s in args.steps.split(",")):
            settings = dataclasses.replace(pipe.defaults, steps=steps, guidance=weight)
            rows = paired.append(args.out, {"model": args.checkpoint or "shipped", "steps": steps, "w": weight}
                                 | paired.paired_row(pipe, evaluator, settings, args.num))
    table = [[r["date"], paired.short(r["model"]), paired.walk(r), r["steps"], r["w"], r["num"], r["passes"],
              f"{100 * r['stray']:.1f}%", f"{r['fid']:.3f}", f"{r['precision']:.3f}", f"{100 * r['acc']:.2f}%",
              f"{100 * r['zero']:.1f}%", f"{100 * r['white']:.1f}%", r["gen_s"]] for r in rows]
    intro = ("`python benchmarks/stray_ink.py --checkpoint MODEL --steps 8,16,50 --weights W`: the default sampling "
             "of the day (guided on t/T 0.3-0.7) but the steps and weight, the same noise and "
             "labels in every arm (seed 0). " + paired.mnist_sentence(mnist))
    paired.write_table(args.out, "Stray ink against solver steps", intro,
                       ["date", "model", "walk", "steps", "w", "N", "passes", "several pieces", "FID", "precision",
                        "read as asked", "zero px", "white px", "generate s"], table)


if __name__ == "__main__":
    main()
