"""docs/how-it-works.md stays true to the code: its links name symbols that exist, its Python runs,
its figures and its UNet table are the package's own."""

from __future__ import annotations

import ast
import importlib.util
import itertools
import json
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


# -- the README: a guide a newcomer can paste from ------------------------------------------------

README = (ROOT / "README.md").read_text()
SHELL_BLOCKS = re.findall(r"```sh\n(.*?)```", README, flags=re.DOTALL)


def readme_commands() -> list[list[str]]:
    """Each `mnist-diffusion ...` line of the README's shell blocks, as arguments (comments dropped)."""
    import shlex

    lines = [line.split(" #")[0].strip() for block in SHELL_BLOCKS for line in block.splitlines()]
    return [shlex.split(line)[1:] for line in lines
            if line.startswith("mnist-diffusion ") and not line.startswith("mnist-diffusion --")]


def test_the_readme_is_a_short_guide() -> None:
    assert len(README.splitlines()) <= 300
    assert "issue" not in README.lower() and not re.search(r"\b(I|my|me)\b", README)  # no internal history
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make \w+", quick_start, flags=re.MULTILINE) == ["make demo", "make test"]


def test_every_readme_command_parses_and_reads_only_what_was_made_before(tmp_path: Path) -> None:
    from mnist_diffusion.cli import build_parser

    commands = readme_commands()
    assert {argv[0] for argv in commands} >= {"sample", "complete", "interpolate", "serve", "download", "train",
                                             "figures", "evaluate", "export", "train-classifier"}
    made: set[str] = set()
    for argv in commands:
        args = build_parser().parse_args(argv)  # exits (a test failure) on a line that does not parse
        for option in ("images", "checkpoint", "samples"):
            path = getattr(args, option, None)
            assert path is None or path in made, \
                f"{' '.join(argv)} reads {path}, which no earlier command made"
        if argv[0] == "figures" and args.run_dir is not None:
            assert args.run_dir in made, f"{args.run_dir} is not made before `figures` plots it"
        if argv[0] in ("evaluate", "figures", "train", "train-classifier"):
            assert "data" in made or argv[0] == "figures", f"{argv[0]} needs MNIST: download it first"
        made |= {value for value in (getattr(args, "out", None), getattr(args, "npz", None)) if value}
        if argv[0] == "download":
            made.add("data")
        if argv[0] == "train":
            made |= {args.run_dir, f"{args.run_dir}/checkpoints/step_{args.max_steps:08d}.safetensors"}
    outputs = [value for argv in commands for value in argv if value.endswith((".png", ".npz"))]
    written = [value for argv in commands for flag, value in itertools.pairwise(argv) if flag in ("--out", "--npz")]
    assert len(written) == len(set(written)), "two examples write the same file"
    assert outputs


def test_the_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["digits"].shape == (80, 28, 28) and namespace["halves"].shape == (8, 28, 28)
    assert namespace["walk"].shape == (8, 28, 28) and (tmp_path / "outputs" / "python_digits.png").exists()


# -- every number quoted from one results file ----------------------------------------------------

def shipped() -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / "shipped_model.json").read_text())


def shown(value: float, digits: int = 3) -> str:
    return f"{value:.{digits}f}"


def test_the_readme_quotes_the_shipped_models_results_file() -> None:
    results = shipped()
    model, floor = results["model"], results["floor"]
    table = README.split("## The shipped model", 1)[1].split("##", 1)[0]
    rows = {cells[0]: cells[1:] for line in table.splitlines() if line.startswith("| ")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}
    for key, name in (("fid", "FID"), ("precision", "precision"), ("recall", "recall"), ("coverage", "coverage")):
        assert rows[name][:2] == [shown(model[key]), shown(floor[key])], name
    assert rows["read as the digit asked for"][0] == f"{100 * model['conditional_accuracy']:.2f}%"
    assert rows["network passes per digit"][0] == str(results["settings"]["network_passes_per_digit"])


def card_row(name: str, row: dict) -> str:
    """A row of the model card's evaluation table, as it must read for `row` of shipped_model.json."""
    def number(key: str, digits: int) -> str:
        return "-" if row[key] is None else f"{row[key]:.{digits}f}"

    cells = [name, *(number(key, 3 if row[key] is None or row[key] < 100 else 1)
                     for key in ("fid", "precision", "recall", "density", "coverage")),
             number("conditional_accuracy", 4), number("near_copy_rate", 4),
             *(f"{100 * row[key]:.1f}%" for key in ("zero_pixels", "stray_ink"))]
    return "| " + " | ".join(cells) + " |"


def test_the_model_card_and_the_tour_quote_the_same_numbers() -> None:
    results = shipped()
    model = results["model"]
    card = (ROOT / "MODEL_CARD.md").read_text()
    names = {"this model, default sampling": model["name"]} | {name: name for name in results["rows"]
                                                              if name != model["name"]}
    for shown_as, key in names.items():
        assert card_row(shown_as, results["rows"][key]) in card.splitlines(), shown_as
    for path in (ROOT / "MODEL_CARD.md", ROOT / "docs" / "how-it-works.md", ROOT / "README.md"):
        for quoted in re.findall(r"shipped model[^.|]*?FID (\d\.\d{3})", path.read_text()):
            assert quoted == shown(model["fid"]), f"{path.name} quotes FID {quoted}"


def test_the_readme_quotes_its_training_example_from_its_results_file() -> None:
    """The README's training line is the one benchmarks/readme_run.py ran, and its minutes and share of
    digits read as asked are that run's."""
    run = json.loads((ROOT / "benchmarks" / "results" / "readme_run.json").read_text())
    line = next(line for line in README.splitlines() if line.startswith("mnist-diffusion train "))
    assert run["command"] == line.split(" #")[0].strip()
    assert f"about {round(run['minutes_at_median_pace'])} minutes on two cores" in line
    assert f"as the digit asked for {round(100 * run['read_as_asked'])}% of the time" in " ".join(README.split())
    assert run["read_as_asked"] >= 0.9


def test_the_readme_quotes_the_completion_guess_from_its_results_file() -> None:
    """Measured on erased inputs (the erased region black, as a user gives it), at least 500 held-out
    digits; the guess never read an erased pixel (the whole digit guessed as its erased copy)."""
    results = json.loads((ROOT / "benchmarks" / "results" / "completion_guess.json").read_text())
    guess = next(r for r in results["guess"] if r["mask"] == "lower" and r["draws"] == results["default_draws"])
    completed = next(r for r in results["completion"] if r["mask"] == "lower" and r["method"].startswith("guess"))
    text = " ".join(README.split())
    assert f"names the digit begun {round(100 * guess['right_seed0'])}% of the time" in text
    assert f"{round(100 * completed['read_as_true_digit'])}% of its completions read as that digit" in text
    assert results["num"] >= 500 and {r["mask"] for r in results["guess"]} == {"lower", "right", "center"}
    assert all(r["whole_digit_agrees"] for r in results["guess"] if r["draws"] == results["default_draws"])


def test_every_results_file_is_listed_in_the_index() -> None:
    results = ROOT / "benchmarks" / "results"
    index = (results / "README.md").read_text()
    for path in sorted(results.glob("*.md")):
        assert path.name == "README.md" or f"]({path.name})" in index, f"{path.name} is not in the results index"


def test_the_readme_and_the_model_card_state_the_default_sampling() -> None:
    """Both say the defaults in `SampleConfig.summary`'s words, so a changed default cannot leave them stale."""
    from mnist_diffusion.config import SampleConfig

    summary = SampleConfig().summary()
    for path in (ROOT / "README.md", ROOT / "MODEL_CARD.md"):
        assert summary in " ".join(path.read_text().split()), path.name
