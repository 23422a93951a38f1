"""Paired A/B of models and sampling settings: every arm draws the same NUM digits from each sampling
seed (the same noise and the same labels, an even mix 0-9 in order) and is scored as
`mnist-diffusion evaluate` scores, with the pixel statistics of the quality targets. The spread over
seeds says how far apart two arms must be to mean anything at this N.

    python benchmarks/ab.py --out NAME --arm ARM [--arm ARM ...] [--seeds 0,1] [--num 10000]

An arm is `LABEL: key=value key=value ...` (or the key=values alone, which then name it). The keys are
the fields of `SampleConfig` (sampler, steps, guidance, guidance_interval=LOW,HIGH|all, precision,
max_batch, last_timestep, log_snr_floor, eta, noise_below; `none` for a field's None), plus
- `model=PATH` (a checkpoint or exported model; `shipped`, the default, is the shipped model),
- `guide=PATH` (autoguidance, Karras et al. 2024: a weaker model of the same data), `guide_weight=W`,
  `guide_below=SHARE`, and `guide_label=null` to guide with its unconditional output.
`default` (no keys) is the product's defaults. Examples, each a study of the 2026-12 round:

    --out model_ab --arm shipped --arm 'model=runs/x/checkpoints/step_00007908.safetensors'
    --out stochastic_tail --arm default --arm 'tail: sampler=dpm++2m-sde noise_below=0.45 guidance=1'
    --out autoguidance --arm default --arm 'auto 2: guide=runs/x/curve/min_010.0.safetensors guidance=2'

Rows are appended to results/NAME.jsonl; results/NAME.md is rewritten from all of its rows, each arm's
mean over its seeds with the range beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from report import markdown_table
from torch import nn

from mnist_diffusion import options, scoring
from mnist_diffusion.config import SampleConfig
from mnist_diffusion.data import to_uint8
from mnist_diffusion.evaluate import Evaluator, stray_ink_share, white_pixel_share, zero_pixel_share
from mnist_diffusion.pipeline import Pipeline

RESULTS = Path(__file__).parent / "results"
WEIGHTS = Path(__file__).parent.parent / "src" / "mnist_diffusion" / "weights" / "default.safetensors"
GUIDE_KEYS = ("guide", "guide_weight", "guide_below", "guide_label")
METRICS = ("fid", "precision", "recall", "coverage", "acc", "zero", "white", "stray")
SCORE_HEADER = ["FID", "precision", "recall", "coverage", "read as asked", "zero px", "white px", "several pieces"]


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: its label, model, sampling settings and autoguidance (none by default)."""

    label: str
    model: str = "shipped"
    settings: SampleConfig = dataclasses.field(default_factory=SampleConfig)
    guide: dict[str, Any] = dataclasses.field(default_factory=dict)


def _value(field: dataclasses.Field, text: str) -> Any:
    """A `SampleConfig` field's value from its text, read as its flag reads it."""
    if text == "none":
        return None
    if field.name == "guidance_interval":
        return options.guidance_interval(text)
    declared = str(field.type)
    return options.config_value(declared)(text) if declared.startswith(("int", "float")) else text


def parse_arm(text: str) -> Arm:
    """`LABEL: key=value ...` -> `Arm`; `ValueError` naming an unknown key or a bad value."""
    label, _, spec = text.rpartition(":") if ":" in text.split("=")[0] else ("", "", text)
    fields = {field.name: field for field in dataclasses.fields(SampleConfig)}
    model, overrides, guide = "shipped", {}, {}
    for item in spec.split():
        if item == "default":
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"arm {text!r}: expected key=value, got {item!r}")
        if key == "model":
            model = value
        elif key in GUIDE_KEYS:
            guide[key] = value if key in ("guide", "guide_label") else float(value)
        elif key in fields:
            overrides[key] = _value(fields[key], value)
        else:
            raise ValueError(f"arm {text!r}: unknown key {key!r}; use model, {', '.join(GUIDE_KEYS)} or a "
                             f"SampleConfig field ({', '.join(fields)})")
    return Arm(label.strip() or spec.strip(), model, SampleConfig(**overrides), guide)


class Unconditional(nn.Module):
    """A network asked for no digit whatever label it is given: the null label of guidance training."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network, self.config = network, network.config

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.network(x, t, torch.full_like(t, self.config.num_classes))


def model_name(model: str) -> str:
    """A checkpoint path cut to its run and file, or 'shipped ' and the first 8 hex digits of the
    shipped weights' sha256, so that rows of different models stay apart."""
    if model == "shipped":
        return "shipped " + hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()[:8]
    path = Path(model)
    return "/".join(path.with_suffix("").parts[-3:]) if path.suffix == ".safetensors" else model


def run_arm(arm: Arm, pipe: Pipeline, evaluator: Evaluator, num: int, seed: int) -> dict:
    """`num` digits of `arm` from `seed`, and their scores."""
    guide_args: dict[str, Any] = {}
    if "guide" in arm.guide:
        network = pipe.load_guide(arm.guide["guide"])
        guide_args = {"guide": Unconditional(network) if arm.guide.get("guide_label") == "null" else network,
                      "guide_weight": arm.guide.get("guide_weight"), "guide_below": arm.guide.get("guide_below")}
    labels = torch.arange(num) % pipe.num_classes
    started = time.perf_counter()
    images = to_uint8(pipe.generate(num, labels, arm.settings, torch.Generator().manual_seed(seed), **guide_args))
    seconds = time.perf_counter() - started
    row, _ = evaluator.score("model", images, labels, memorize=False)
    counted = {key: value for key, value in guide_args.items() if key != "guide"} | {"guide": bool(guide_args)}
    return {"date": time.strftime("%Y-%m-%d"), "model": model_name(arm.model), "arm": arm.label,
            "settings": dataclasses.asdict(arm.settings), "guide": {k: str(v) for k, v in arm.guide.items()},
            "walk": arm.settings.summary().replace("`", ""), "num": num, "seed": seed, "fid": row.fid,
            "precision": row.precision, "recall": row.recall, "coverage": row.coverage,
            "acc": row.conditional_accuracy, "zero": row.zero_pixels, "stray": row.stray_ink,
            "white": white_pixel_share(images), "passes": pipe.passes(arm.settings, True, **counted),
            "gen_s": round(seconds)}


def cell(values: list[float], key: str) -> str:
    """The mean of `values`, with (lowest-highest) beside it when there are several."""
    scale, digits = (100, 2) if key == "acc" else (100, 1) if key in ("zero", "white", "stray") else (1, 3)
    mean = f"{scale * statistics.fmean(values):.{digits}f}"
    return mean if len(values) == 1 else f"{mean} ({scale * min(values):.{digits}f}-{scale * max(values):.{digits}f})"


def legacy(row: dict) -> dict:
    """A row written by the per-study scripts this tool replaced (2026-12-02 and before), in this
    tool's terms: its arm from the keys that study varied, its walk from the sampler and end point it
    recorded (rows of 2026-12-02 and earlier that recorded neither were dpm++2m ending at t = 12)."""
    if "walk" in row:
        return row
    varied = [f"{key} {row[key]}" for key in ("noise_below", "interval", "last", "steps") if key in row]
    arm = row.get("arm") or ", ".join(varied) or "default"
    walk = f"{row.get('sampler', 'dpm++2m')} ending at t = {row.get('last_timestep', row.get('last', 12))}, " \
           f"guidance {row.get('w', '?')}"
    return row | {"arm": arm, "walk": walk, "model": model_name(row.get("model", "shipped"))}


def arm_means(paths: list[Path], num: int = 10_000) -> list[dict]:
    """Every arm of these results files drawn at `num` digits with all of `METRICS`: where it comes from
    (the file's stem, date, model, arm and walk) and each metric's mean over its seeds."""
    groups: dict[tuple, list[dict]] = {}
    for path in paths:
        for row in map(legacy, map(json.loads, path.read_text().splitlines())):
            if row.get("num") == num and all(row.get(key) is not None for key in METRICS):
                groups.setdefault((path.stem, row["date"], row["model"], row["arm"], row["walk"]), []).append(row)
    return [{"study": study, "date": date, "model": model, "arm": arm, "walk": walk, "seeds": len(rows),
             **{key: statistics.fmean(row[key] for row in rows) for key in METRICS}}
            for (study, date, model, arm, walk), rows in groups.items()]


def write_table(out: Path, rows: list[dict], mnist: dict[str, float] | None) -> Path:
    """OUT.md: one line per (date, model, arm, N), its mean and range over the seeds drawn."""
    groups: dict[tuple, list[dict]] = {}
    for row in map(legacy, rows):
        groups.setdefault((row["date"], row["model"], row["arm"], row.get("walk", ""), row["num"]), []).append(row)
    table = [[date, model, arm, walk, num, ", ".join(str(r["seed"]) for r in group),
              *(cell([r[key] for r in group], key) for key in METRICS), group[0]["passes"],
              round(statistics.fmean(r["gen_s"] for r in group))]
             for (date, model, arm, walk, num), group in groups.items()]
    reference = "" if mnist is None else (
        f" MNIST's test digits: {100 * mnist['zero']:.1f}% exact-zero pixels, {100 * mnist['white']:.1f}% pure "
        f"white, {100 * mnist['stray']:.1f}% in more than one piece of ink.")
    intro = (f"`python benchmarks/ab.py --out {out.stem} --arm ...`: every arm draws the same digits at a seed (the "
             "same noise and labels); mean over the seeds, (lowest-highest) beside it; percent columns in %; "
             "generation seconds on a machine that may have been doing other work." + reference)
    path = out.with_suffix(".md")
    path.write_text("\n".join([f"# Paired comparison: {out.stem}", "", intro, "", *markdown_table(
        ["date", "model", "arm", "walk", "N", "seeds", *SCORE_HEADER, "passes", "generate s"], table)]) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--out", required=True, help="results/OUT.jsonl gains the rows; results/OUT.md is rewritten")
    parser.add_argument("--arm", action="append", default=[], help="an arm (see above); repeat for more")
    parser.add_argument("--seeds", default="0", help="sampling seeds each arm is drawn from, comma-separated")
    parser.add_argument("--num", type=int, default=10_000, help="digits per arm and seed")
    parser.add_argument("--data-root", default="data")
    args = parser.parse_args()
    arms = [parse_arm(text) for text in args.arm]  # every arm checked before any is drawn
    out = RESULTS / args.out
    evaluator, _, test_images = scoring.evaluator_for(args.data_root, download=False)
    mnist = {"zero": zero_pixel_share(test_images), "white": white_pixel_share(test_images),
             "stray": stray_ink_share(test_images)}
    log = out.with_suffix(".jsonl")
    for arm in arms:
        pipe = Pipeline.load(None if arm.model == "shipped" else arm.model, device="cpu")
        for seed in (int(s) for s in args.seeds.split(",")):
            row = run_arm(arm, pipe, evaluator, args.num, seed)
            with open(log, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    print(f"wrote {write_table(out, rows, mnist)}")


if __name__ == "__main__":
    main()
