"""benchmarks/ab.py's summary of every paired comparison (the issue-32 report's best-per-target
tables): which rows make an arm, and that an arm's score is the mean over its seeds."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
from ab import METRICS, arm_means


def row(seed: int, fid: float, **changed: object) -> dict:
    scores = dict.fromkeys(METRICS, 0.5) | {"fid": fid}
    return {"date": "2026-12-08", "model": "m", "arm": "a", "walk": "w", "num": 10_000, "seed": seed,
            **scores, **changed}


def test_an_arm_is_the_mean_of_its_seeds_at_the_size_asked(tmp_path: Path) -> None:
    path = tmp_path / "study.jsonl"
    rows = [row(0, 0.3), row(1, 0.5), row(2, 9.0, num=1_000), row(3, 9.0, white=None), row(0, 0.7, arm="b"),
            row(1, 0.9, walk="another walk")]
    path.write_text("\n".join(map(json.dumps, rows)) + "\n")
    arms = {(arm["arm"], arm["walk"]): arm for arm in arm_means([path])}
    assert set(arms) == {("a", "w"), ("b", "w"), ("a", "another walk")}
    assert arms["a", "w"]["seeds"] == 2 and arms["a", "w"]["fid"] == pytest.approx(0.4)
    assert arms["a", "w"]["study"] == "study" and arms["a", "w"]["precision"] == pytest.approx(0.5)
    assert arms["b", "w"]["seeds"] == 1 and arms["b", "w"]["fid"] == pytest.approx(0.7)
