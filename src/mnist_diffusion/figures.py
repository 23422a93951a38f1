"""Pictures: sample grids, the forward-noising strip, the reverse-process strip, a GIF, the loss curve.

Grids and GIFs are drawn with Pillow (exact pixels, scaled up with nearest-neighbour so a digit
stays crisp); labelled figures use matplotlib with the Agg backend (no display needed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import SampleConfig
from .files import atomic_write, regular_file

GRID_MAX_COLUMNS = 32  # a PNG grid of a request shows at most 32 digits per row and 32 rows; an .npz keeps all
GRID_MAX_ROWS = 32


def grid_image(images: torch.Tensor, nrow: int | None = None, scale: int = 2, padding: int = 2) -> Image.Image:
    """uint8 `(N, H, W)` -> one greyscale image with `nrow` digits per row (square by default)."""
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError("grid_image expects uint8 images shaped (N, H, W)")
    count, height, width = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / nrow)
    canvas = np.full((rows * (height + padding) + padding, nrow * (width + padding) + padding), 40, np.uint8)
    for index, image in enumerate(images.numpy()):
        r, c = divmod(index, nrow)
        top, left = padding + r * (height + padding), padding + c * (width + padding)
        canvas[top:top + height, left:left + width] = image
    picture = Image.fromarray(canvas, mode="L")
    return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)


def save_png(picture: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))
    return path


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 2,
              row_labels: Sequence[str] | None = None) -> Path:
    """One PNG grid of uint8 images; `row_labels` writes a name left of each row (e.g. its class)."""
    picture = grid_image(images, nrow=nrow, scale=scale)
    return save_png(label_rows(picture, row_labels, scale) if row_labels else picture, path)


def label_rows(picture: Image.Image, labels: Sequence[str], scale: int, padding: int = 2) -> Image.Image:
    """`picture` (a grid of 28-pixel rows) with a margin on the left naming each row, in PIL's own font."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    margin = max(int(draw.textlength(label, font=font)) for label in labels) + 8
    labelled = Image.new("L", (picture.width + margin, picture.height), 40)
    labelled.paste(picture, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    row_height = (28 + padding) * scale
    for row, label in enumerate(labels):
        draw.text((4, padding * scale + row * row_height + row_height // 2 - 6), label, fill=230, font=font)
    return labelled


def _matplotlib():
    _use_writable_matplotlib_cache()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _use_writable_matplotlib_cache() -> None:
    """matplotlib warns on every start when it cannot write its cache under HOME (a read-only or
    missing HOME); point it at a private temporary directory instead, before it is imported."""
    if "MPLCONFIGDIR" in os.environ:
        return
    config_dir = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "matplotlib"
    try:
        config_dir.mkdir(parents=True, exist_ok=True)  # what matplotlib itself would do first
        writable = os.access(config_dir, os.W_OK)
    except OSError:
        writable = False
    if not writable:
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="mnist-diffusion-matplotlib-")


def _save_figure(fig, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    _matplotlib().close(fig)
    return path


def strip_figure(rows: Sequence[torch.Tensor], column_titles: Sequence[str], title: str,
                 path: str | Path, row_titles: Sequence[str] | None = None) -> Path:
    """A table of digits: `rows[r]` is uint8 `(columns, H, W)`; one titled column per entry."""
    plt = _matplotlib()
    n_rows, n_cols = len(rows), len(column_titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.85 * n_cols + 0.6, 0.9 * n_rows + 0.7), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.imshow(row[c].numpy(), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if r == 0:
                ax.set_title(column_titles[c], fontsize=8)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return _save_figure(fig, path)


def save_gif(frames: Sequence[torch.Tensor], path: str | Path, nrow: int | None = None,
             scale: int = 3, frame_ms: int = 70, hold_last_ms: int = 1500) -> Path:
    """An animated GIF; each frame is uint8 `(N, H, W)` laid out as a grid."""
    pictures = [grid_image(frame, nrow=nrow, scale=scale) for frame in frames]
    durations = [frame_ms] * (len(pictures) - 1) + [hold_last_ms]
    path = Path(path)
    atomic_write(path, lambda tmp: pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                                                   duration=durations, loop=0))
    return path


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl, each checked: a JSON object with a whole-number `step` and
    finite numbers for `loss`, `lr` and `elapsed_s` where present. A last line that is not JSON was
    cut short by a kill and is skipped; any other bad line is a `ValueError` naming file and line."""
    path = Path(path)
    lines = regular_file(path, "metrics file").read_text(errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested thousands deep
            if number == len(lines):
                continue
            raise ValueError(f"{path}, line {number}: not a JSON object") from None
        rows.append(_checked_metrics_row(row, path, number))
    return rows


def _checked_metrics_row(row: object, path: Path, number: int) -> dict:
    where = f"{path}, line {number}"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if type(row.get("step")) is not int or row["step"] < 0:
        raise ValueError(f"{where}: 'step' must be a whole number >= 0, got {json.dumps(row.get('step'))}")
    for key in ("loss", "lr", "elapsed_s"):
        value = row.get(key)
        if key in row and (type(value) not in (int, float) or not math.isfinite(value)):
            raise ValueError(f"{where}: '{key}' must be a finite number, got {json.dumps(value)}")
    return row


def loss_curve(metrics_path: str | Path, path: str | Path, rows: list[dict] | None = None) -> Path:
    """Training loss against step (raw and smoothed) and the learning rate, with wall-clock minutes
    on a second axis. The loss is the training objective: MSE, weighted per sample under min-SNR.
    `rows` are the already-read metrics, when the caller checked them first."""
    rows = [row for row in (rows if rows is not None else read_metrics(metrics_path)) if "loss" in row]
    if not rows:
        raise ValueError(f"{metrics_path} holds no loss values")
    plt = _matplotlib()
    steps = np.array([row["step"] for row in rows])
    losses = np.array([row["loss"] for row in rows])
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(steps, losses, color="#9ab", linewidth=0.8, label="loss")
    ax.plot(steps[window - 1:], smooth, color="#135", linewidth=1.8, label=f"moving mean ({window})")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    if (losses > 0).all():  # a log axis cannot show zero or negative losses (a hand-made or odd log)
        ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    if all("lr" in row for row in rows):
        right = ax.twinx()
        handles += right.plot(steps, [row["lr"] for row in rows], color="#c63", linestyle="--", linewidth=1.2,
                              label="learning rate")
        labels.append("learning rate")
        right.set_ylabel("learning rate")
        right.set_ylim(bottom=0)
    ax.legend(handles, labels, frameon=False)
    if "elapsed_s" in rows[-1] and rows[-1]["step"] > 0:
        minutes_per_step = rows[-1]["elapsed_s"] / 60 / rows[-1]["step"]
        top = ax.secondary_xaxis("top", functions=(lambda s: s * minutes_per_step, lambda m: m / minutes_per_step))
        top.set_xlabel("minutes (average pace)")
    ax.set_title("Training loss", fontsize=11)
    fig.tight_layout()
    return _save_figure(fig, path)


# -- the recipes of `mnist-diffusion figures` and `evaluate` ------------------------------------

def forward_process_figure(schedule, clean: torch.Tensor, image_size: int, generator: torch.Generator,
                           path: str | Path, source: str, black: float = -1.0) -> Path:
    """Clean uint8 digits `(N, 28, 28)` noised by q(x_t | x_0) at ten levels from t = 0 to T-1, one
    row per digit, black at `black` as the model learned it; `source` says where the digits came from."""
    from .data import to_model_space, to_uint8

    x0 = to_model_space(clean, image_size, black)  # (N, 1, S, S)
    # Ten noise levels, as fractions of T: dense early, where the digit is still readable.
    fractions = (0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0)
    shown_t = sorted({min(int(f * schedule.num_timesteps), schedule.num_timesteps - 1) for f in fractions})
    noise = torch.randn(x0.shape, generator=generator)
    columns = len(shown_t)
    rows = [to_uint8(schedule.q_sample(x0[i:i + 1].expand(columns, -1, -1, -1), torch.tensor(shown_t),
                                       noise[i:i + 1].expand(columns, -1, -1, -1)))
            for i in range(len(x0))]
    return strip_figure(rows, [f"t={t}" for t in shown_t],
                        f"Forward process q(x_t | x_0): {source} turning into noise", path)


def ddpm_chain(settings: SampleConfig, steps: int | None = None) -> SampleConfig:
    """`settings` (their guidance, precision and batch) on DDPM's ancestral chain down to t = 0: every
    timestep, or `steps` of them. The reverse-process figures show this chain."""
    return dataclasses.replace(settings, sampler="ddpm", steps=steps, last_timestep=0, eta=None, noise_below=None)


def reverse_process_figure(model, schedule, labels: torch.Tensor | None, settings: SampleConfig,
                           generator: torch.Generator, path: str | Path, device: torch.device | str = "cpu",
                           on_step: Callable[[dict], None] = lambda step: None) -> Path:
    """One row per label (or 6 unconditional digits) x 15 snapshots of full-T ancestral sampling
    (`ddpm_chain` of `settings`); `on_step` is told of each step."""
    from .data import to_uint8
    from .sampling import generate, timesteps_for

    chain = ddpm_chain(settings)
    timesteps = timesteps_for(chain, schedule)
    keep = set(torch.linspace(0, len(timesteps) - 1, 15).round().long().tolist())
    snapshots: list[torch.Tensor] = []
    titles: list[str] = []

    def record(step: dict) -> None:
        on_step(step)
        if step["i"] in keep:
            snapshots.append(to_uint8(step["x"].cpu()))
            landed_on = int(timesteps[step["i"] + 1]) if step["i"] + 1 < len(timesteps) else None
            titles.append("x_0" if landed_on is None else f"t={landed_on}")

    count = len(labels) if labels is not None else 6
    generate(model, schedule, count, chain, labels=labels, generator=generator, device=device, callback=record)
    rows = [torch.stack([snapshot[i] for snapshot in snapshots]) for i in range(count)]
    return strip_figure(rows, titles, "Reverse process: DDPM ancestral sampling, noise to digits", path)


GIF_STEPS = 60


def sampling_gif(model, schedule, labels: torch.Tensor | None, settings: SampleConfig, generator: torch.Generator,
                 path: str | Path, device: torch.device | str = "cpu", steps: int = GIF_STEPS,
                 on_step: Callable[[dict], None] = lambda step: None) -> Path:
    """Digits forming (20, or one per label), x_t after every one of `steps` DDPM steps (`ddpm_chain`
    of `settings`). Noisy frames barely compress, so it stays small: 20 digits at 2x are ~3 MB."""
    from .data import to_uint8
    from .sampling import generate

    frames: list[torch.Tensor] = []

    def record(step: dict) -> None:
        on_step(step)
        frames.append(to_uint8(step["x"].cpu()))

    generate(model, schedule, len(labels) if labels is not None else 20, ddpm_chain(settings, min(steps,
             schedule.num_timesteps)), labels=labels, generator=generator, device=device, callback=record)
    return save_gif(frames, path, nrow=10, scale=2)


def nearest_neighbours_figure(images: torch.Tensor, train_images: torch.Tensor, copies, path: str | Path) -> Path:
    """The 12 samples most like a training image, each above its nearest training digit (`copies`:
    `evaluate.Memorization`)."""
    closest = copies.closest(12)
    ratio = copies.nearest_distance / copies.second_distance
    return strip_figure([images[closest], train_images[copies.nearest_index[closest]]],
                        [f"{ratio[i]:.2f}" for i in closest.tolist()],
                        "Samples most like a training image (nearest / second-nearest distance above each)",
                        path, row_titles=["sample", "nearest\ntrain"])


def capped_grid(pixels: torch.Tensor, per_row: int | None, max_columns: int = GRID_MAX_COLUMNS,
                max_rows: int = GRID_MAX_ROWS) -> tuple[torch.Tensor, int | None]:
    """The digits a PNG grid shows: at most `max_columns` per row and `max_rows` rows (with rows of
    `per_row` digits, each row's first ones), so a huge request stays a viewable image."""
    if per_row is None:
        return pixels[:max_columns * max_rows], None
    rows = pixels.reshape(-1, per_row, *pixels.shape[1:])[:max_rows, :max_columns]
    return rows.reshape(-1, *pixels.shape[1:]), rows.shape[1]


def training_grid(model, schedule, settings: SampleConfig, device: torch.device | str = "cpu") -> bytes:
    """100 digits from `model` drawn with `settings` and a fixed seed, one row per digit when it is
    conditional, as PNG bytes: the grid a training run draws every `sample_every` steps, so grids of
    one run compare step to step, and each shows what `sample` would draw from that step's weights."""
    import io

    from .data import to_uint8
    from .sampling import generate

    rows = min(model.config.num_classes, 10) if model.config.conditional else 10
    labels = torch.arange(rows).repeat_interleave(10) if model.config.conditional else None
    images = generate(model, schedule, 10 * rows, settings, labels=labels, generator=torch.Generator().manual_seed(0),
                      device=device)
    encoded = io.BytesIO()
    grid_image(to_uint8(images, dark_ink=model.config.dark_ink), nrow=10).save(encoded, format="PNG")
    return encoded.getvalue()


def figure_steps(schedule) -> int:
    """Network steps `process_figures` takes (the chain of the reverse process and of the GIF)."""
    return schedule.num_timesteps + min(GIF_STEPS, schedule.num_timesteps)


def process_figures(model, schedule, out_dir: str | Path, *, clean: torch.Tensor | None = None,
                    settings: SampleConfig, seed: int = 0, device: torch.device | str = "cpu",
                    on_start: Callable[[str], None] = lambda what: None,
                    on_step: Callable[[dict], None] = lambda step: None) -> Iterator[Path]:
    """The figures of `mnist-diffusion figures`, yielded as each is written: the forward process of
    six clean digits (`clean`, uint8 `(6, 28, 28)`; None: six the model draws with `settings`), the
    reverse process over all T steps, and the sampling GIF (`ddpm_chain` of `settings`). `on_start(what)`
    is told before each, `on_step` of every step of the two chains (`figure_steps` in all)."""
    from .data import to_uint8
    from .sampling import generate

    out_dir, conditional = Path(out_dir), model.config.conditional
    generator = torch.Generator().manual_seed(seed)
    on_start("forward process")
    source = "MNIST test digits"
    if clean is None:
        labels = torch.arange(6) % model.config.num_classes if conditional else None
        clean = to_uint8(generate(model, schedule, 6, settings, labels=labels, generator=generator, device=device))
        source = "digits drawn by the model (no MNIST data found)"
    yield forward_process_figure(schedule, clean, model.config.image_size, generator,
                                 out_dir / "forward_process.png", source, model.config.black)
    on_start(f"reverse process ({schedule.num_timesteps} steps)")
    shown = torch.tensor([0, 2, 4, 6, 8, 9]) % model.config.num_classes if conditional else None
    yield reverse_process_figure(model, schedule, shown,
                                 settings, generator, out_dir / "reverse_process.png", device, on_step)
    on_start("sampling GIF")
    yield sampling_gif(model, schedule, torch.arange(min(model.config.num_classes, 10)).repeat(2) if conditional
                       else None, settings,
                       generator, out_dir / "sampling.gif", device, on_step=on_step)


def completion_rows(pixels: torch.Tensor, keep: torch.Tensor, completed: torch.Tensor) -> torch.Tensor:
    """Per input digit, a row: the digit, its erased input (erased pixels dark grey), its completions.
    pixels: uint8 `(N, 28, 28)`; keep: bool `(28, 28)`, True = known; completed: `(N * K, 28, 28)`."""
    per_image = len(completed) // len(pixels)
    erased = torch.where(keep, pixels, torch.full_like(pixels, 60))
    return torch.cat([torch.cat([pixels[i:i + 1], erased[i:i + 1], completed[i * per_image:(i + 1) * per_image]])
                      for i in range(len(pixels))])


def training_grids(write: Callable[[str, bytes], object], schedule, settings: SampleConfig,
                   device: torch.device | str = "cpu",
                   warn: Callable[[str], None] = lambda message: None) -> Callable[[torch.nn.Module, int], None]:
    """A training run's sample hook: `training_grid` given to `write(name, png)` as `step_XXXXXXXX.png`
    (`RunDirectory.write_sample`); a grid that cannot be written is reported through `warn` and the
    training goes on."""
    def draw(model: torch.nn.Module, step: int) -> None:
        try:
            write(f"step_{step:08d}.png", training_grid(model, schedule, settings, device))
        except OSError as error:
            warn(f"could not write sample grid: {error.strerror or error}: {error.filename}")

    return draw


def there_and_back_gif(frames: torch.Tensor, path: str | Path) -> Path:
    """An animated GIF of uint8 frames `(F, 28, 28)` played forward, then back (a loop without a jump)."""
    order = list(range(len(frames))) + list(range(len(frames) - 2, 0, -1))
    return save_gif([frames[i:i + 1] for i in order], path, nrow=1, scale=6, frame_ms=120, hold_last_ms=120)


def read_loss_log(run_dir: str | Path) -> list[dict]:
    """The checked rows of a run's metrics.jsonl for `loss_curve`; `ValueError` if there is none to plot."""
    metrics = Path(run_dir) / "metrics.jsonl"
    if not metrics.exists():
        raise ValueError(f"{run_dir} has no metrics.jsonl to plot")
    rows = read_metrics(metrics)
    if not any("loss" in row for row in rows):
        raise ValueError(f"{metrics} holds no loss values to plot")
    return rows
