"""The CLI's contract under generated input (Hypothesis): whatever the arguments, checkpoint header,
checkpoint tensors or sample file, a command exits 0 or 2 with no traceback, says what was wrong in
one line, and leaves no half-written file. Derandomized and bounded so CI stays fast."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mnist_diffusion import data
from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
from mnist_diffusion.cli import main
from mnist_diffusion.config import DiffusionConfig, preset
from mnist_diffusion.unet import UNet

from conftest import fake_mnist, idx_bytes

SETTINGS = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A tiny conditional checkpoint and tiny MNIST files (with their checksums made the known ones)."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        root = Path(tmp)
        torch.manual_seed(0)
        config = preset("tiny")
        model = UNet(config)
        torch.nn.init.normal_(model.out[-1].weight, std=0.05)
        save_checkpoint(Checkpoint(config, DiffusionConfig(num_timesteps=20), model.state_dict()),
                        root / "tiny.safetensors")
        raw = data.raw_dir(root / "data")
        raw.mkdir(parents=True)
        checksums = {}
        for split, count in (("train", 256), ("test", 64)):
            images, labels = fake_mnist(count, seed=len(split))
            for name, array in zip(data.SPLIT_FILES[split], (images, labels), strict=True):
                (raw / name).write_bytes(idx_bytes(array))
                checksums[name] = data.sha256_of(raw / name)
        patch.setattr(data, "SHA256", checksums)
        yield root


def run(*argv: str) -> tuple[int, str]:
    """The CLI in-process: its exit status and stderr (argparse's own exits included)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
    return code, err.getvalue()


def assert_contract(code: int, err: str, out_dir: Path, allowed: tuple[int, ...] = (0, 2)) -> None:
    assert code in allowed, err
    assert "Traceback" not in err
    if code != 0:
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and errors[0].startswith("mnist-diffusion"), err
    assert not list(out_dir.rglob("*.tmp")), "a temporary file was left behind"


# -- arguments ---------------------------------------------------------------------------------

def option_values(valid: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid values mixed with what careless hands type: garbage, empty, huge, negative, non-finite."""
    nasty = st.sampled_from(["", "abc", "-1", "0", "1e309", "nan", "inf", "-inf", "9" * 30, "1.5", "0x10", " 3",
                             "\x00", "-0", "1e300", str(2**64)])
    return st.one_of(valid, nasty)


small_int = st.integers(min_value=1, max_value=6).map(str)
SAMPLE_OPTIONS = {
    "--num": option_values(small_int),
    "--steps": option_values(st.integers(min_value=1, max_value=8).map(str)),
    "--sampler": option_values(st.sampled_from(["ddpm", "ddim", "dpm++2m"])),
    "--guidance": option_values(st.floats(min_value=0, max_value=25, allow_nan=False).map(repr)),
    "--eta": option_values(st.floats(min_value=-0.5, max_value=1.5, allow_nan=False).map(repr)),
    "--seed": option_values(st.integers(min_value=-5, max_value=2**64).map(str)),
    "--batch-size": option_values(small_int),
    "--digit": option_values(st.integers(min_value=-2, max_value=12).map(str)),
    "--digits": option_values(st.sampled_from(["0-9", "3", "1,3,5", "9-2", "1-3,8", "a-b", ",", "0-"])),
    "--per-digit": option_values(small_int),
}


@SETTINGS
@given(chosen=st.dictionaries(st.sampled_from(sorted(SAMPLE_OPTIONS)), st.just(None), max_size=5), data_=st.data())
def test_any_sample_arguments_keep_the_contract(workspace: Path, chosen: dict, data_: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        # Small defaults first (a drawn option given again overrides them), so a run stays ~0.1 s.
        argv = ["sample", "--checkpoint", str(workspace / "tiny.safetensors"), "--out", str(out_dir / "g.png"),
                "--npz", str(out_dir / "g.npz"), "--num", "4", "--per-digit", "2", "--steps", "3"]
        for option in chosen:
            argv += [option, data_.draw(SAMPLE_OPTIONS[option], label=option)]
        code, err = run(*argv)
        assert_contract(code, err, out_dir)
        event(f"exit {code}")
        if code == 0:
            with Image.open(out_dir / "g.png") as grid:
                grid.verify()
            with np.load(out_dir / "g.npz") as saved:
                assert saved["images"].dtype == np.uint8 and saved["images"].shape[1:] == (28, 28)
        else:
            assert not list(out_dir.iterdir()), "a refused command wrote files"


# -- checkpoint headers and tensors ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**40), max_value=2**40) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6)
HEADER_PATHS = [("format",), ("format_version",), ("model_config",), ("diffusion_config",), ("step",), ("extra",),
                ("images_seen",), ("model_config", "base_channels"), ("model_config", "channel_mults"),
                ("model_config", "image_size"), ("model_config", "num_classes"), ("model_config", "norm_groups"),
                ("model_config", "attention_resolutions"), ("model_config", "dropout"),
                ("diffusion_config", "num_timesteps"), ("diffusion_config", "beta_schedule"),
                ("diffusion_config", "prediction_type"), ("diffusion_config", "beta_end")]


def edited_copy(source: Path, target: Path, edit_meta=None, edit_tensors=None) -> Path:
    with safe_open(str(source), "pt") as handle:
        meta = json.loads(handle.metadata()["json"])
    tensors = load_file(str(source))
    if edit_meta is not None:
        meta = edit_meta(meta)
    if edit_tensors is not None:
        edit_tensors(tensors)
    save_file(tensors, str(target), metadata={"json": json.dumps(meta)})
    return target


@SETTINGS
@given(edits=st.lists(st.tuples(st.sampled_from(HEADER_PATHS), st.one_of(st.just("delete"), json_values)),
                      min_size=1, max_size=3))
def test_any_damaged_header_keeps_the_contract(workspace: Path, edits: list) -> None:
    def edit(meta: dict) -> dict:
        for path, value in edits:
            holder = meta
            for key in path[:-1]:
                holder = holder.get(key) if isinstance(holder, dict) else None
            if not isinstance(holder, dict):
                continue
            if value == "delete":
                holder.pop(path[-1], None)
            else:
                holder[path[-1]] = value
        return meta

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        bad = edited_copy(workspace / "tiny.safetensors", out_dir / "bad.safetensors", edit_meta=edit)
        code, err = run("sample", "--checkpoint", str(bad), "--num", "2", "--steps", "2",
                        "--out", str(out_dir / "g.png"))
        assert_contract(code, err, out_dir)
        event(f"exit {code}")


@SETTINGS
@given(action=st.sampled_from(["drop", "rename", "reshape", "retype", "add"]), index=st.integers(0, 10_000),
       which=st.sampled_from(["sample", "export"]))
def test_any_damaged_tensor_is_refused_in_one_line(workspace: Path, action: str, index: int, which: str) -> None:
    def edit(tensors: dict[str, torch.Tensor]) -> None:
        name = sorted(tensors)[index % len(tensors)]
        value = tensors.pop(name)
        if action == "rename":
            tensors[name + "_renamed"] = value
        elif action == "reshape":
            tensors[name] = torch.zeros(value.numel() + 1)
        elif action == "retype":
            tensors[name] = torch.zeros(3, 3, 3, dtype=torch.int32)
        elif action == "add":
            tensors[name] = value
            tensors["model.surprise.weight"] = torch.zeros(2)

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        bad = edited_copy(workspace / "tiny.safetensors", out_dir / "bad.safetensors", edit_tensors=edit)
        out = out_dir / ("g.png" if which == "sample" else "m.safetensors")
        code, err = run(which, "--checkpoint", str(bad), "--out", str(out))
        assert_contract(code, err, out_dir, allowed=(2,))
        assert str(bad) in err and not out.exists()


# -- sample files ------------------------------------------------------------------------------

# Valid choices repeated so about half the files are scorable and the rest each break one rule.
DTYPES = [np.uint8] * 6 + [np.int64, np.float32, np.float64, np.bool_, np.int8, "U2"]


@st.composite
def sample_files(draw) -> dict[str, np.ndarray]:
    count = draw(st.sampled_from([0, 1, 3, 5, 6, 12, 12, 12]))
    shape = draw(st.sampled_from([(count, 28, 28)] * 4 + [(count, 1, 28, 28), (count, 32, 32), (count, 784), (count,)]))
    arrays = {"images": np.zeros(shape, dtype=draw(st.sampled_from(DTYPES)))}
    if draw(st.booleans()):
        length = draw(st.sampled_from([count, max(count - 1, 0), count + 1]))
        values = st.integers(0, 9) if draw(st.booleans()) else st.integers(-3, 12)
        labels = np.array(draw(st.lists(values, min_size=length, max_size=length)), dtype=np.int64)
        arrays["labels"] = labels.astype(draw(st.sampled_from([np.int64, np.int64, np.uint8, np.float64, "U2"])))
    if draw(st.integers(0, 3)) == 0:
        arrays = {"other": arrays["images"], **{k: v for k, v in arrays.items() if k != "images"}}
    return arrays


@SETTINGS
@given(arrays=sample_files())
def test_any_sample_file_keeps_the_contract(workspace: Path, arrays: dict[str, np.ndarray]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(tmp)
        path = out_dir / "s.npz"
        np.savez(path, **arrays)
        code, err = run("evaluate", "--samples", str(path), "--no-references", "--data-root",
                        str(workspace / "data"), "--out-dir", str(out_dir / "eval"))
        assert_contract(code, err, out_dir)
        assert (code == 0) == (out_dir / "eval" / "report.json").exists()
        event(f"exit {code}")
