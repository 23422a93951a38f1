"""Progress outside a terminal: lines at each tenth of the work and, when a request will take
minutes, an estimate after its first step (a clock of the test's own, never the machine's)."""

from __future__ import annotations

import pytest

from mnist_diffusion.progress import LineProgress

from conftest import SteppingClock


def test_a_long_request_says_how_long_after_its_first_step(capsys: pytest.CaptureFixture[str]) -> None:
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
