"""docs/how-it-works.md stays true to the code: its links name symbols that exist, its Python runs,
its figures and its UNet table are the package's own."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "how-it-works.md"
TEXT = DOC.read_text()
CODE_LINK = re.compile(r"\[`([\w.]+)`\]\((\.\./src/[^)]+\.py)\)")


def defined_names(path: Path) -> set[str]:
    """Top-level functions, classes and assignments, and `Class.member` for methods and attributes."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        if isinstance(node, ast.ClassDef):
            for member in ast.walk(node):
                if isinstance(member, ast.FunctionDef):
                    names.add(f"{node.name}.{member.name}")
                elif isinstance(member, ast.Attribute) and isinstance(member.value, ast.Name) \
                        and member.value.id == "self":
                    names.add(f"{node.name}.{member.attr}")
    return names


def test_every_code_link_names_a_symbol_defined_in_that_file() -> None:
    links = CODE_LINK.findall(TEXT)
    assert len(links) > 30
    for symbol, target in links:
        path = (DOC.parent / target).resolve()
        assert path.exists(), target
        assert symbol in defined_names(path), f"{symbol} is not defined in {target}"


def test_every_figure_exists() -> None:
    for image in re.findall(r"!\[[^\]]*\]\((images/[^)]+)\)", TEXT):
        assert (DOC.parent / image).stat().st_size > 1000, image


PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_every_python_block_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(PYTHON_BLOCKS[index], f"how-it-works.md block {index + 1}", "exec"), {})


def test_the_unet_table_is_the_one_the_code_produces() -> None:
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.unet_table() in TEXT


def test_the_readme_points_to_the_document_on_its_first_screen() -> None:
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:20])
    assert "docs/how-it-works.md" in first_screen
