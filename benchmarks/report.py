"""What every benchmark's report needs: a Markdown table, and the .json and .md files written together."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def write_report(out: str | Path, payload: dict, lines: Sequence[str]) -> None:
    """`out`.json holds the raw numbers, `out`.md the text a person reads."""
    out = Path(out)
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
