"""Every figure of docs/how-it-works.md, and its UNet table, made by the package itself.

    python docs/make_figures.py          # writes docs/images/{schedules,trajectory,samplers,guidance}.png

The table of tensor shapes and parameter counts printed at the end is the one in the document; a
test checks that the two agree, so the document cannot drift from the code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mnist_diffusion import NoiseSchedule, generate, load_checkpoint
from mnist_diffusion.config import DiffusionConfig, SampleConfig, preset
from mnist_diffusion.data import to_uint8
from mnist_diffusion.figures import strip_figure
from mnist_diffusion.sampling import Guidance, count_passes
from mnist_diffusion.unet import UNet, count_parameters

IMAGES = Path(__file__).parent / "images"
DIGITS = torch.arange(10)


def schedules_figure() -> Path:
    """alpha-bar and log-SNR against t for the linear and the cosine schedule, T = 1000."""
    from mnist_diffusion.figures import _matplotlib, _save_figure

    plt = _matplotlib()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, colour in (("linear", "#135"), ("cosine", "#c63")):
        schedule = NoiseSchedule(DiffusionConfig(beta_schedule=name))
        left.plot(schedule.alphas_cumprod64.numpy(), color=colour, label=name)
        right.plot(schedule.log_snr.numpy(), color=colour, label=name)
    left.set(xlabel="t", ylabel="alpha-bar_t (share of signal variance)", title="alpha-bar")
    right.set(xlabel="t", ylabel="log SNR = log(alpha-bar / (1 - alpha-bar))", title="log-SNR")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.tight_layout()
    return _save_figure(fig, IMAGES / "schedules.png")


def trajectory_figure(model, schedule) -> Path:
    """One digit's DPM-Solver++ steps at the defaults: the state x after each step and the predicted clean digit."""
    states, predictions, titles = [], [], []

    def record(step: dict) -> None:
        states.append(to_uint8(step["x"]))
        predictions.append(to_uint8(step["x0"]))
        titles.append(f"t={step['t']}")

    defaults = SampleConfig()
    generate(model, schedule, 1, defaults, labels=torch.tensor([3]), generator=torch.Generator().manual_seed(2),
             callback=record)
    return strip_figure([torch.cat(predictions), torch.cat(states)], titles,
                        f"One trajectory ({defaults.summary().replace('`', '')}): the network's x0 prediction, "
                        "and x after each step",
                        IMAGES / "trajectory.png", row_titles=["predicted\nx0", "x after\nthe step"])


def samplers_figure(model, schedule) -> Path:
    """The same noise and labels through each sampler at the same cost: 20 network passes per digit."""
    rows, names, weight = [], [], SampleConfig.guidance
    arms = (("unipc", 10, weight), ("dpm++2m", 10, weight), ("ddim", 10, weight), ("ddpm", 10, weight),
            ("unipc", 20, 1.0))
    for sampler, steps, guidance in arms:
        # Every step guided, so that each arm costs exactly 20 passes.
        settings = SampleConfig(sampler=sampler, steps=steps, guidance=guidance, guidance_interval="all")
        images = generate(model, schedule, 10, settings, labels=DIGITS, generator=torch.Generator().manual_seed(4))
        rows.append(to_uint8(images))
        passes = count_passes(schedule, settings, Guidance(True, guidance))
        names.append(f"{sampler}\n{steps} steps, w={guidance:g}\n{passes} passes")
    return strip_figure(rows, [str(d) for d in range(10)], "Samplers at equal cost: 20 network passes per digit",
                        IMAGES / "samplers.png", row_titles=names)


def guidance_figure(model, schedule) -> Path:
    rows, names = [], []
    for guidance in (0.0, 1.0, 1.5, 3.0):
        settings = SampleConfig(guidance=guidance, steps=10, guidance_interval="all")
        images = generate(model, schedule, 10, settings, labels=DIGITS, generator=torch.Generator().manual_seed(7))
        rows.append(to_uint8(images))
        names.append(f"w = {guidance:g}")
    return strip_figure(rows, [f"asked {d}" for d in range(10)],
                        "Classifier-free guidance: the same seeds at four weights", IMAGES / "guidance.png",
                        row_titles=names)


def unet_table(preset_name: str = "small") -> str:
    """Markdown: each top-level stage of the UNet, its output shape for one 28x28 digit, its parameters."""
    model = UNet(preset(preset_name)).eval()
    rows: list[tuple[str, str, str, int]] = []

    def hook(name: str, kind: str):
        def record(module, inputs, output) -> None:
            rows.append((name, kind, "x".join(map(str, output.shape[1:])), count_parameters(module)))
        return record

    stages = [("stem", "3x3 conv", model.stem)]
    stages += [(f"down[{i}]", _kind(stage), stage) for i, stage in enumerate(model.down)]
    stages += [(f"mid[{i}]", type(layer).__name__, layer) for i, layer in enumerate(model.mid)]
    stages += [(f"up[{i}]", _kind(stage), stage) for i, stage in enumerate(model.up)]
    stages += [("out", "norm, SiLU, 3x3 conv", model.out)]
    handles = []
    for name, kind, module in stages:
        if isinstance(module, torch.nn.ModuleList):  # a ResBlock (+ attention): hook its last layer
            handles.append(module[-1].register_forward_hook(hook(name, kind)))
            continue
        handles.append(module.register_forward_hook(hook(name, kind)))
    with torch.no_grad():
        model(torch.zeros(1, 1, 28, 28), torch.tensor([500]), torch.tensor([3]))
    for handle in handles:
        handle.remove()
    lines = ["| stage | what | output (C x H x W) | parameters |", "|---|---|---|---|"]
    lines += [f"| {name} | {kind} | {shape} | {_stage_parameters(model, name):,} |" for name, kind, shape, _ in rows]
    embeddings = count_parameters(model.time_mlp) + count_parameters(model.label_emb)
    lines.append(f"| time and label embeddings | MLP, lookup table | {model.time_mlp[-1].out_features} | "
                 f"{embeddings:,} |")
    lines.append(f"| **total** | | | **{count_parameters(model):,}** |")
    return "\n".join(lines)


def _kind(stage: torch.nn.Module) -> str:
    if isinstance(stage, torch.nn.ModuleList):
        return "ResBlock + attention" if len(stage) > 1 else "ResBlock"
    if isinstance(stage, torch.nn.Conv2d):
        return "3x3 conv, stride 2 (down)"
    return "2x nearest + 3x3 conv (up)"


def _stage_parameters(model: UNet, name: str) -> int:
    if name in ("stem", "out"):
        return count_parameters(getattr(model, name))
    group, index = name.rstrip("]").split("[")
    return count_parameters(getattr(model, group)[int(index)])


def main() -> None:
    checkpoint = load_checkpoint()
    model, schedule = checkpoint.build_model(), NoiseSchedule(checkpoint.diffusion_config)
    for path in (schedules_figure(), trajectory_figure(model, schedule), samplers_figure(model, schedule),
                 guidance_figure(model, schedule)):
        print(f"wrote {path}")
    print(unet_table())


if __name__ == "__main__":
    main()
