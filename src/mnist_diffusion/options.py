"""Parsers of the values people type for options: each returns the value or raises `ValueError`
with a message that names what is allowed. The command line wraps them as argparse types; the
benchmarks use the same ones, so there is one syntax for each kind of value."""

from __future__ import annotations

import math
from collections.abc import Callable

from .config import ALL_STEPS
from .data import NUM_CLASSES


def whole_number(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low:,} and {high:,}, got {value:,}")
        return value

    return parse


def number(low: float, high: float = math.inf, *, low_inclusive: bool = True) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        above_low = value >= low if low_inclusive else value > low
        if not (above_low and value <= high and math.isfinite(value)):
            bound = f"{'>=' if low_inclusive else '>'} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
            raise ValueError(f"must be a finite number {bound}, got {text}")
        return value

    return parse


def config_value(declared: str) -> Callable[[str], int | float | str]:
    """A value of a config field's declared type (`int` or `float`, perhaps `| None`), finite; its
    range is for the config's own validator to check. Text (`str | None`) is taken as typed."""
    if declared.startswith("str"):
        return str
    return whole_number(-(2**63), 2**63 - 1) if declared.startswith("int") else number(-math.inf)


def digit(text: str) -> int:
    if text.strip() not in {str(d) for d in range(NUM_CLASSES)}:
        raise ValueError(f"a digit is 0-9, got {text!r}")
    return int(text)


def digit_list(text: str) -> list[int]:
    """'0-9', '3,5,7' or '1-3,8' -> list of digits in the order given."""
    digits: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            low, high = part.split("-", 1)
            first, last = digit(low), digit(high)
            if first > last:
                raise ValueError(f"range {part!r} runs backwards")
            digits.extend(range(first, last + 1))
        else:
            digits.append(digit(part))
    return digits


def class_name(text: str) -> str:
    """A class as typed: a model's class name or a class index; the model checks it (`Pipeline.check_classes`)."""
    if not text.strip():
        raise ValueError("a class is a name or an index, got nothing")
    return text.strip()


def class_list(text: str) -> list[str]:
    """'0-9', '3,5,7', '1-3,8' or names 'cat,dog' -> the classes in the order given (a range 'A-B' of
    whole numbers is expanded; anything else, 'T-shirt/top' included, is one name)."""
    classes: list[str] = []
    for part in (part.strip() for part in text.split(",")):
        low, dash, high = part.partition("-")
        if dash and low.strip().isdigit() and high.strip().isdigit():
            first, last = int(low), int(high)
            if first > last:
                raise ValueError(f"range {part!r} runs backwards")
            if last - first > 10_000:
                raise ValueError(f"range {part!r} is longer than 10,000 classes")
            classes.extend(str(k) for k in range(first, last + 1))
        else:
            classes.append(class_name(part))
    return classes


def pair(parse: Callable[[str], int]) -> Callable[[str], list[int]]:
    """Two values separated by a comma, each read by `parse`."""
    def parse_pair(text: str) -> list[int]:
        parts = text.split(",")
        if len(parts) != 2:
            raise ValueError(f"expected two values separated by a comma, got {text!r}")
        return [parse(part.strip()) for part in parts]

    return parse_pair


def guidance_interval(text: str) -> tuple[float, float] | str:
    """'LOW,HIGH' (shares of T, 0 <= LOW <= HIGH <= 1) or 'all' (guide every step)."""
    if text.strip() == ALL_STEPS:
        return ALL_STEPS
    parts = text.split(",")
    if len(parts) != 2:
        raise ValueError(f"expected LOW,HIGH (shares of T, e.g. 0.1,0.6) or all, got {text!r}")
    low, high = (number(0.0, 1.0)(part.strip()) for part in parts)
    if low > high:
        raise ValueError(f"the interval {text!r} runs backwards")
    return low, high


def format_interval(interval: tuple[float, float] | str) -> str:
    """The text `guidance_interval` reads back as `interval`."""
    return ALL_STEPS if interval == ALL_STEPS else f"{interval[0]:g},{interval[1]:g}"


def threads(text: str) -> str | int:
    """'auto' or a number of CPU threads from 1 to 1024."""
    return "auto" if text.strip() == "auto" else whole_number(1, 1024)(text)
