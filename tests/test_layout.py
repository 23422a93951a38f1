"""The package's layout as the style guide asks: the command line is the only face that parses
arguments and stays thin, modules and functions stay readable, data flows one way (training never
samples), and the benchmarks call the library instead of starting the command line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "src" / "mnist_diffusion"
MODULES = sorted(PACKAGE.glob("*.py"))


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names |= {base} | {f"{base}.{alias.name}" if not node.module else base for alias in node.names}
    return names


def test_only_the_command_line_parses_arguments() -> None:
    """cli.py and the flags it makes from the config dataclasses (flags.py)."""
    parsing = [path.name for path in MODULES if "argparse" in imported_modules(path)]
    assert parsing == ["cli.py", "flags.py"]


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_modules_stay_readable(path: Path) -> None:
    lines = path.read_text().splitlines()
    assert len(lines) <= (600 if path.name == "cli.py" else 500), f"{path.name}: {len(lines)} lines"
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            body = "\n".join(lines[node.lineno - 1:node.end_lineno])
            assert length <= 50 or "# long:" in body, f"{path.name}: {node.name} is {length} lines"


def test_training_never_samples_or_draws() -> None:
    imported = imported_modules(PACKAGE / "train.py")
    assert not {name for name in imported if name.startswith((".sampling", ".figures", ".pipeline"))}


def test_benchmarks_call_the_library_not_the_command_line() -> None:
    starts_the_cli = re.compile(r"subprocess\.\w+\(\s*\[[^\]]*mnist[_-]diffusion", re.DOTALL)
    offenders = [path.name for path in sorted((ROOT / "benchmarks").glob("*.py"))
                 if starts_the_cli.search(path.read_text())]
    assert offenders == []
