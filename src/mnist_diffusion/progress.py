"""Progress of long work on stderr: a redrawn bar in a terminal, plain lines elsewhere (a log, CI),
so a command that runs for minutes always says how far it is."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any


def say(message: str) -> None:
    """A line on stderr; nothing when stderr is closed (the work goes on without its commentary)."""
    if sys.stderr is not None:
        print(message, file=sys.stderr, flush=True)


class LineProgress:
    """Progress outside a terminal (a log, CI): one line at each tenth of the work, with the time."""

    def __init__(self, total: int, description: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.description, self.done, self.shown = max(total, 1), description, 0, 0
        self.clock = clock
        self.started = clock()
        self.first: tuple[int, float] | None = None  # (work done, time) after the first update

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.first is None:
            self.first = (self.done, self.clock())
        elif self.first[0] + count == self.done and self.total > 10 * self.done:
            self._estimate()
        tenth = 10 * self.done // self.total
        if tenth > self.shown:
            self.shown = tenth
            say(f"{self.description}: {10 * tenth}% ({self.done}/{self.total} steps, "
                 f"{self.clock() - self.started:.0f} s)")

    def _estimate(self) -> None:
        """After the second update, how long the whole will take: the time so far, and the rest at the
        pace since the first update (the first step carries the warm-up: model load, first allocations,
        a busy core's first seconds, so a projection from it alone overstated long runs many times)."""
        assert self.first is not None
        now = self.clock()
        pace = (now - self.first[1]) / (self.done - self.first[0])
        projected = now - self.started + pace * (self.total - self.done)
        if projected > 60:
            say(f"{self.description}: about {projected / 60:.0f} minutes at this pace")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress(total: int, description: str):
    """A progress bar on stderr in a terminal; elsewhere a line at each tenth of the work."""
    if sys.stderr is None or not sys.stderr.isatty():
        return LineProgress(total, description)
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="step", leave=False, file=sys.stderr)


class TrainProgress:
    """Fed the trainer's log rows: a bar in a terminal (made on the first row, when the total is
    known); elsewhere a line at each twentieth of the run, or every 20 rows when it has no step limit."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.total_steps: int | None = None
        self.first_step = 0
        self.rows = 0
        self.last_shown = -1

    def __call__(self, row: dict) -> None:
        postfix = {"loss": f"{row['loss']:.4f}", "img_s": f"{row['images_per_s']:.0f}", "epoch": row["epoch"]}
        if sys.stderr is None or not sys.stderr.isatty():
            self.rows += 1
            mark = (20 * row["step"] // self.total_steps) if self.total_steps else self.rows // 20
            if mark != self.last_shown:
                self.last_shown = mark
                of = f"/{self.total_steps}" if self.total_steps else ""
                say(f"train: step {row['step']}{of}, " + ", ".join(f"{k} {v}" for k, v in postfix.items()))
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(desc="train", unit="step", file=sys.stderr, total=self.total_steps,
                            initial=self.first_step)
        self.bar.update(row["step"] - self.bar.n)
        self.bar.set_postfix(**postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
