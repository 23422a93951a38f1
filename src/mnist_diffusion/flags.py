"""Command-line flags made from the config dataclasses: one flag per field, with the field's help,
default and choices, so a setting is defined, validated and documented once, where its flag comes
from (`TrainConfig` for `train`, `SampleConfig` for the commands that draw). The dataclass's own
validator checks the values; its messages name the field, and `sample_settings` names the flag."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from . import datasets, options
from .config import MAX_SEED, SAMPLER_NAMES, SampleConfig
from .data import SPLIT_SIZES


class UsageError(ValueError):
    """Bad input from the user."""


def argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An option type from a parser of `options`: its `ValueError` becomes argparse's one-line error."""
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def whole_number(low: int, high: int) -> Callable[[str], int]:
    return argument(options.whole_number(low, high))


def add_config_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of a config dataclass (`--max-steps` for `max_steps`), help from its metadata."""
    for field in dataclasses.fields(config_class):
        default = field.default
        shown = f" (default: {default})" if default is not None else ""
        spec: dict[str, Any] = {"default": default, "help": field.metadata["help"] + shown}
        if field.metadata.get("choices"):
            spec["choices"] = field.metadata["choices"]
        else:
            spec["type"] = argument(options.config_value(str(field.type)))
        parser.add_argument(f"--{field.name.replace('_', '-')}", **spec)


def check_training_request(args: argparse.Namespace) -> None:
    """What `train` can refuse from its flags alone, before it fetches or prepares any data."""
    if args.epochs is None and args.max_minutes is None and args.max_steps is None:
        raise UsageError("say how long to train: --epochs N, --max-minutes M or --max-steps S")
    for flag in ("student_steps", "distillation"):
        if getattr(args, flag) is not None and args.teacher is None:
            raise UsageError(f"--{flag.replace('_', '-')} sets what a distillation learns: give the --teacher too")
    if args.guidance_free and args.teacher is not None:
        raise UsageError("a student is its teacher's network: --guidance-free does not apply with --teacher")
    if args.data == "mnist" and args.batch_size > SPLIT_SIZES["train"]:
        raise UsageError(f"--batch-size {args.batch_size} exceeds MNIST's {SPLIT_SIZES['train']} training images")


def add_data(parser: argparse.ArgumentParser) -> None:
    """--data SOURCE and how to prepare it (`datasets.prepare`), for the commands that train."""
    parser.add_argument("--data", default="mnist", metavar="SOURCE",
                        help=f"what to train on: {', '.join(datasets.BUILTIN_SOURCES)} (IDX files under --data-root), "
                             "a folder of images (one sub-folder per class; a flat folder: no classes) or an .npz "
                             "with images, labels and class_names (default: mnist)")
    parser.add_argument("--data-root", default="data",
                        help="root of the IDX datasets, fetched when missing (default: data)")
    parser.add_argument("--invert", choices=datasets.INVERT_CHOICES, default="auto",
                        help="the data's polarity: auto inverts ink on light paper (seen at the images' borders) so "
                             "ink is bright as in MNIST, and samples come back as the data was; yes; no "
                             "(default: auto)")
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="go on without the images of a folder that cannot be read (default: refuse, naming them)")


def flag(name: str) -> str:
    """The command-line flag of a `SampleConfig` field."""
    field = {f.name: f for f in dataclasses.fields(SampleConfig)}[name]
    return field.metadata["flag"] or "--" + name.replace("_", "-")


def _sample_help(field: dataclasses.Field, steps_default: str | None) -> str:
    help_text = field.metadata["help"]
    if field.name == "steps" and steps_default:
        return f"{help_text.split(' (default:')[0]} (default: {steps_default})"
    if field.name == "steps" or field.default is None:
        return help_text  # says its default in its own words
    shown = options.format_interval(field.default) if field.name == "guidance_interval" else field.default
    return f"{help_text} (default: {shown})"


# The `SampleConfig` fields each drawing command takes as flags (sample and evaluate: all of them).
COMPLETE_FIELDS = ("sampler", "steps", "guidance", "guidance_interval", "precision", "fp32_from", "max_batch", "eta",
                   "noise_below")
INTERPOLATE_FIELDS = ("sampler", "steps", "guidance", "guidance_interval", "precision", "fp32_from", "last_timestep",
                      "log_snr_floor")


def add_sampling(parser: argparse.ArgumentParser, fields: Sequence[str] | None = None, *,
                 samplers: Sequence[str] = SAMPLER_NAMES, steps_default: str | None = None) -> None:
    """One flag per `SampleConfig` field in `fields` (all by default), then --seed and --no-ema."""
    chosen = [f for f in dataclasses.fields(SampleConfig) if fields is None or f.name in fields]
    for field in chosen:
        meta = field.metadata
        # Unset flags are left out, so the model's own walk (`Pipeline.defaults`) fills them in.
        spec: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS,
                                "help": _sample_help(field, steps_default)}
        if meta["metavar"]:
            spec["metavar"] = meta["metavar"]
        if field.name == "sampler":
            spec["choices"] = samplers
        elif meta["choices"]:
            spec["choices"] = meta["choices"]
        elif field.name == "guidance_interval":
            spec["type"] = argument(options.guidance_interval)
        elif str(field.type) == "bool":
            spec["action"] = "store_true"
        else:
            spec["type"] = argument(options.config_value(str(field.type)))
        parser.add_argument(flag(field.name), *meta["aliases"], **spec)
    parser.set_defaults(sample_fields=tuple(f.name for f in chosen))
    parser.add_argument("--seed", type=whole_number(0, MAX_SEED), default=0,
                        help=f"random seed in [0, {MAX_SEED}]; the same seed gives the same digits")
    parser.add_argument("--no-ema", action="store_true", help="use the raw weights instead of their EMA")


def _name_the_flag(error: ValueError, fields: Sequence[str]) -> UsageError:
    """`error` (whose message begins with a field's name) as the flag's error."""
    message = str(error)
    for name in fields:
        if message.startswith(name + " "):
            return UsageError(flag(name) + message[len(name):])
    return UsageError(message)


def sample_settings(args: argparse.Namespace, pipe: Any) -> SampleConfig:
    """The model's own settings (`pipe.defaults`: the product's defaults, or a distilled student's walk)
    with the sampling flags given replacing theirs, checked by `SampleConfig`'s validator and against
    the model (steps beyond its T, an end point below its log-SNR floor) before any work."""
    given = {name: getattr(args, name) for name in args.sample_fields if hasattr(args, name)}
    try:
        settings = pipe.settings(**given)
        pipe.steps_for(settings)
    except ValueError as error:
        raise _name_the_flag(error, args.sample_fields) from None
    return settings
