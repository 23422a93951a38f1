"""Progress outside a terminal: lines at each tenth of the work and, when a request will take
minutes, an estimate after its second step (a clock of the test's own, never the machine's)."""

from __future__ import annotations

import pytest

from mnist_diffusion.progress import LineProgress

from conftest import SteppingClock


def test_a_long_request_says_how_long_after_its_second_step(capsys: pytest.CaptureFixture[str]) -> None:
    with LineProgress(100, "sample", clock=SteppingClock(2.0)) as bar:
        for _ in range(100):
            bar.update()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("sample: about ") and lines[0].endswith("minutes at this pace")
    assert [line.split(": ")[1].split("%")[0] for line in lines[1:]] == [str(10 * i) for i in range(1, 11)]


def test_a_short_request_gives_no_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    with LineProgress(100, "sample", clock=SteppingClock(0.01)) as bar:
        for _ in range(100):
            bar.update()
    assert "about" not in capsys.readouterr().err


class WarmUpClock:
    """A first step of `warm_up` seconds, then `pace` seconds a step."""

    def __init__(self, warm_up: float, pace: float) -> None:
        self.times = iter([0.0, warm_up] + [warm_up + pace * k for k in range(1, 10_000)])

    def __call__(self) -> float:
        return next(self.times)


def test_the_estimate_leaves_the_first_steps_warm_up_out(capsys: pytest.CaptureFixture[str]) -> None:
    """A 3-step sample whose first step took a minute (loading, a busy core) once said "about 49 minutes";
    the rest is projected at the pace after the first step."""
    with LineProgress(1000, "sample", clock=WarmUpClock(warm_up=90.0, pace=0.06)) as bar:
        bar.update()
        bar.update()
    estimate = capsys.readouterr().err.strip().splitlines()[0]
    assert estimate == "sample: about 2 minutes at this pace"  # 90 s + 998 steps of 0.06 s, not 1000 x 90 s
