"""Autoguidance (Karras et al. 2024) against classifier-free guidance at equal network passes.

    python benchmarks/autoguidance.py --checkpoint MODEL --guides EARLY1,EARLY2 --weights 1.5,2 [--num 10000]

Every arm draws the same NUM digits (an even mix, seed --seed, 0 unless told) with the default sampler, steps, end
point and guidance interval, so the arms differ only in what the guided steps extrapolate from:
- `cfg w`: the unconditional branch (classifier-free guidance; the default weight is one arm);
- `none`: no guidance (the conditional branch alone, fewer passes);
- `auto GUIDE w`: the conditional output of GUIDE, a weaker model of the same run (an earlier
  snapshot), so the guided steps cost one pass of each network, as classifier-free guidance does;
- `cfg W above S, auto GUIDE w below` (`--split S --split-cfg W`): classifier-free guidance at W on
  the guided steps at t/T >= S, autoguidance at w below S, at the same passes;
- `auto-uncond GUIDE w` (`--unconditional-guide`): GUIDE's unconditional output (the null label),
  which pushes towards the class and away from the weak model's errors at once, at the same cost.

Scores as `mnist-diffusion evaluate`, with the pixel statistics of the quality targets. Rows are
appended to benchmarks/results/autoguidance.jsonl; benchmarks/results/autoguidance.md is rewritten
from all rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import paired
import torch
from torch import nn

from mnist_diffusion import scoring
from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.pipeline import Pipeline


class Unconditional(nn.Module):
    """A network asked for no digit whatever label it is given: the null label of guidance training."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network, self.config = network, network.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.network(x, t, torch.full_like(t, self.config.num_classes))


def main() -> None:
    parser = paired.parser(__doc__, "autoguidance")
    parser.add_argument("--checkpoint", required=True, help="the model to sample")
    parser.add_argument("--guides", default="", help="weaker models to guide with, comma-separated")
    parser.add_argument("--weights", default="1.5,2", help="autoguidance weights, comma-separated")
    parser.add_argument("--cfg-weights", default="", help="classifier-free weights besides the default")
    parser.add_argument("--no-unguided", dest="unguided", action="store_false", help="skip the `none` arm")
    parser.add_argument("--no-default", dest="default", action="store_false", help="skip the default cfg arm")
    parser.add_argument("--unconditional-guide", action="store_true", help="guide with GUIDE's unconditional output")
    parser.add_argument("--split", type=float, default=None,
                        help="autoguide only the guided steps below this share of T; classifier-free guidance at "
                             "--split-cfg (default: the default weight) above it")
    parser.add_argument("--split-cfg", type=float, default=None, help="classifier-free weight above --split")
    parser.add_argument("--seed", type=int, default=0, help="the sampling seed of every arm")
    args = parser.parse_args()
    pipe = Pipeline.load(args.checkpoint, device="cpu")
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    mnist = paired.reference(test_images)
    default = pipe.defaults
    arms = [(f"cfg {default.guidance:g}", default, None, None)] if args.default else []
    arms += [(f"cfg {w}", dataclasses.replace(default, guidance=float(w)), None, None)
             for w in filter(None, args.cfg_weights.split(","))]
    arms += [("none", dataclasses.replace(default, guidance=1.0), None, None)] if args.unguided else []
    for path in filter(None, args.guides.split(",")):
        guide = load_checkpoint(path).build_model(use_ema=True)
        kind = "auto-uncond" if args.unconditional_guide else "auto"
        guide = Unconditional(guide) if args.unconditional_guide else guide
        if args.split is None:
            arms += [(f"{kind} {Path(path).stem} {w}", dataclasses.replace(default, guidance=float(w)), guide, None)
                     for w in args.weights.split(",")]
        else:
            above = dataclasses.replace(default, guidance=args.split_cfg or default.guidance)
            arms += [(f"cfg {above.guidance:g} above {args.split:g}, {kind} {Path(path).stem} {w} below", above,
                      guide, float(w)) for w in args.weights.split(",")]
    for name, settings, guide, guide_weight in arms:
        paired.append(args.out, {"model": args.checkpoint, "arm": name}
                             | paired.paired_row(pipe, evaluator, settings, args.num, seed=args.seed, guide=guide,
                                                 guide_weight=guide_weight,
                                                 guide_below=args.split if guide_weight is not None else None))
    intro = ("`python benchmarks/autoguidance.py --checkpoint MODEL --guides ... --weights ...`: the default sampling "
             "of the day (8 steps of the row's sampler, guided on t/T 0.3-0.7), the same noise and labels in every arm "
             "of a seed; `auto X w` guides with the conditional output of X, an earlier EMA snapshot of the same "
             "run, `auto-uncond X w` with its unconditional output. " + paired.mnist_sentence(mnist))
    paired.write_scores(args.out, "Autoguidance against classifier-free guidance", intro,
                        ["date", "model", "walk", "arm", "N", "seed", "passes"],
                        lambda r: [r["date"], paired.short(r["model"]), paired.walk(r), r["arm"], r["num"],
                                   r["seed"], r["passes"]])


if __name__ == "__main__":
    main()
