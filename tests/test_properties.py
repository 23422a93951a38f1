"""The CLI's contract under generated input (Hypothesis): whatever the arguments, checkpoint header,
checkpoint tensors, training-checkpoint field or sample file, a command exits 0 or 2 with no traceback
(1 where training itself cannot go on), says what was wrong in one line, and leaves no half-written
file; and whatever the request, the server answers with a status and one-line error and goes on
serving. Derandomized and bounded so CI stays fast."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import socket
import tempfile
import threading
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
from mnist_diffusion.config import DiffusionConfig, ModelConfig, TrainConfig, preset
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


# -- every field of a training checkpoint, on resume ---------------------------------------------

DEEP = "<nested 5,000 deep>"  # a label in the header, replaced by JSON nested 5,000 deep when it is written
field_values = st.one_of(json_values, st.sampled_from([float("nan"), float("inf"), -1e12, 1e300, -1, 0, 2.5, "200",
                                                       DEEP, [1], {}, None, True]))
TRAIN_HEADER_PATHS = [
    *[("train_config", f.name) for f in dataclasses.fields(TrainConfig)],
    *[("model_config", f.name) for f in dataclasses.fields(ModelConfig)],
    *[("diffusion_config", f.name) for f in dataclasses.fields(DiffusionConfig)],
    ("extra", "elapsed_s"), ("extra", "warmup_elapsed_s"), ("optimizer_param_groups",), ("step",),
    ("images_seen",), ("extra",), ("train_config",),
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The newest checkpoint of a two-step tiny run on made-up digits (it carries every header field)."""
    from worker import make_trainer

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    make_trainer(run_dir, 2).run()
    return sorted((run_dir / "checkpoints").glob("step_*.safetensors"))[-1]


@settings(SETTINGS, max_examples=60)
@given(edits=st.lists(st.tuples(st.sampled_from(TRAIN_HEADER_PATHS), field_values), min_size=1, max_size=2))
def test_any_checkpoint_field_keeps_the_contract_on_resume(workspace: Path, trained_run: Path, edits: list) -> None:
    def edit(meta: dict) -> dict:
        for path, value in edits:
            holder = meta
            for key in path[:-1]:
                holder = holder.get(key) if isinstance(holder, dict) else None
            if isinstance(holder, dict):
                holder[path[-1]] = value
        return meta

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        (run_dir / "checkpoints").mkdir(parents=True)
        copy = edited_copy(trained_run, run_dir / "checkpoints" / trained_run.name, edit_meta=edit)
        with safe_open(str(copy), "pt") as handle:
            text = handle.metadata()["json"].replace(json.dumps(DEEP), "[" * 5_000 + "1" + "]" * 5_000)
        save_file(load_file(str(copy)), str(copy), metadata={"json": text})
        code, err = run("train", "--run-dir", str(run_dir), "--resume", "--max-steps", "3", "--max-minutes", "2",
                        "--batch-size", "16", "--data-root", str(workspace / "data"))
        assert_contract(code, err, run_dir, allowed=(0, 1, 2))
        event(f"exit {code}")


# -- server requests -------------------------------------------------------------------------

BODY_KEYS = ["digit", "guidance", "sampler", "steps", "seed", "pace_ms", "pixels", "known", "method", "mode",
             "seeds", "digits", "frames", "x"]
body_values = st.one_of(json_values, st.integers(-3, 25), st.sampled_from(["ddim", "ddpm", "repaint", "seeds",
                                                                           "digits"]),
                        st.lists(st.integers(0, 9), min_size=2, max_size=2), st.just([1] * 392 + [0] * 392),
                        st.just([0] * 784))
header_values = st.one_of(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
                          st.sampled_from(["", "0", "-1", "99999999999", "http://evil.example", "null"]))


@pytest.fixture(scope="module")
def tiny_server(workspace: Path) -> Iterator[int]:
    from mnist_diffusion.serve import Demo, make_server

    threads_before = torch.get_num_threads()
    server = make_server(Demo.load(str(workspace / "tiny.safetensors"), workspace / "no-data"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    torch.set_num_threads(threads_before)


def exchange(port: int, request: bytes) -> bytes | None:
    """The server's whole answer; None when the connection was reset under it: a server that answers
    without reading a body (a PUT, a refusal) closes a socket holding unread bytes, and TCP then
    sends a reset that may overtake the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as connection:
        try:
            connection.sendall(request)
            connection.shutdown(socket.SHUT_WR)  # a short body ends here instead of waiting out the timeout
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        except ConnectionResetError:
            return None
    return answer


@SETTINGS
@given(path=st.sampled_from(["/api/generate", "/api/complete", "/api/interpolate", "/api/info", "/nope"]),
       body=st.one_of(st.dictionaries(st.sampled_from(BODY_KEYS), body_values, max_size=6), json_values,
                      st.binary(max_size=40).map(lambda raw: ("raw", raw))),
       headers=st.dictionaries(st.sampled_from(["Host", "Origin", "Content-Length", "Content-Type", "X-Any"]),
                               header_values, max_size=3),
       method=st.sampled_from(["POST", "POST", "GET", "PUT"]))
def test_any_request_gets_an_answer_and_the_server_goes_on(tiny_server: int, path: str, body: object,
                                                           headers: dict, method: str) -> None:
    if isinstance(body, dict) and type(body.get("pace_ms")) is int and 0 <= body["pace_ms"] <= 2000:
        body["pace_ms"] = 0  # a valid pace only slows the test down
    raw = body[1] if isinstance(body, tuple) else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.0", f"Content-Length: {len(raw)}",
             *(f"{name}: {value}" for name, value in headers.items())]
    answer = exchange(tiny_server, ("\r\n".join(lines) + "\r\n\r\n").encode() + raw)
    if answer is None:
        event("reset")
        answer = b"HTTP/1.0 000 reset\r\n\r\n"
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.0 ") else None
    assert status in (0, 200, 400, 403, 404, 405, 408, 411, 503), answer[:300]
    _, _, payload = answer.partition(b"\r\n\r\n")
    if status == 200 and method == "POST" and path != "/api/info":
        items = [json.loads(line) for line in payload.splitlines() if line.strip()]
        assert items and items[-1]["type"] in ("done", "error")
    elif status in (400, 403, 404, 405, 408, 503):
        error = json.loads(payload)["error"]
        assert error and "\n" not in error
    event(f"HTTP {status}")
    assert (exchange(tiny_server, b"GET /api/info HTTP/1.0\r\n\r\n") or b"").startswith(b"HTTP/1.0 200")


# -- the Python API: only TypeError or ValueError, naming an argument ---------------------------------

WILD = st.one_of(st.none(), st.booleans(), st.integers(-3, 12), st.sampled_from([2**64, 10**9, 2.5, 3.0, float("nan"),
                                                                                   "3", "all", "x", [], [1], (1, 2),
                                                                                   (0.7, 0.2), -1]))
SAMPLE_ARGS = ("num", "digit", "digits", "per_digit", "classes", "per_class", "seed", "steps", "guidance",
               "guidance_interval", "max_batch", "precision", "sampler", "last_timestep", "eta", "batch_size")
IMAGE_VALUES = st.sampled_from([np.zeros((28, 28), np.uint8), np.full((2, 28, 28), 300), np.full((28, 28), -1),
                                np.full((1, 28, 28), 0.5), np.zeros((27, 28)), np.zeros((0, 28, 28)), "img", None])


API_SETTINGS = settings(SETTINGS, max_examples=40)  # each example that is valid draws: keep the count small


@pytest.fixture(scope="module")
def api_pipe(workspace: Path):
    from mnist_diffusion.pipeline import Pipeline

    return Pipeline.load(workspace / "tiny.safetensors", device="cpu", threads=None)


def _named(error: Exception, names) -> bool:
    message = str(error)
    return any(name in message for name in names)


@API_SETTINGS
@given(chosen=st.dictionaries(st.sampled_from(SAMPLE_ARGS), WILD, max_size=4))
def test_pipeline_sample_raises_only_named_type_or_value_errors(api_pipe, chosen: dict) -> None:
    chosen = {"steps": 2, **chosen} if chosen.get("steps") is None else chosen  # keep what runs quick
    num = chosen.get("num")
    if (isinstance(num, int) and num > 8) or chosen.get("steps") in (11, 12):
        chosen["num"] = 2
    try:
        drawn = api_pipe.sample(**chosen)
    except (TypeError, ValueError) as error:
        assert _named(error, [*chosen, "class", "digit", "guide"]), (chosen, error)
        event(type(error).__name__)
        return
    assert drawn.dtype == np.uint8 and drawn.shape[1:] == (28, 28)


@API_SETTINGS
@given(images=IMAGE_VALUES, mask=st.sampled_from(["lower", "middle", np.ones((28, 28), bool), np.zeros((28, 28)),
                                                   np.zeros((28, 27), bool), 3]),
       num_per_image=st.sampled_from([1, 0, -1, 2.5, "2"]), digit=WILD)
def test_pipeline_complete_raises_only_named_errors(api_pipe, images, mask, num_per_image, digit) -> None:
    try:
        api_pipe.complete(images, mask, num_per_image=num_per_image, digit=digit, steps=2, method="replace")
    except (TypeError, ValueError) as error:
        assert _named(error, ["images", "mask", "num_per_image", "digit", "erases"]), error


@API_SETTINGS
@given(seeds=st.sampled_from([None, (1,), (1, 2), (1, 2, 3), "12", (1.5, 2), (-1, 2)]),
       digits=st.sampled_from([None, (3, 8), (3,), ("x", 2), (3, 11)]), frames=st.sampled_from([2, 1, 65, 2.5, "3"]),
       digit=WILD)
def test_pipeline_interpolate_raises_only_named_errors(api_pipe, seeds, digits, frames, digit) -> None:
    try:
        api_pipe.interpolate(seeds=seeds, digits=digits, frames=frames, digit=digit, steps=2)
    except (TypeError, ValueError) as error:
        assert _named(error, ["seeds", "digits", "frames", "digit"]), error


@API_SETTINGS
@given(images=IMAGE_VALUES, nrow=st.sampled_from([None, 1, 0, -1, 2.5, "2"]), scale=st.sampled_from([1, 0, 17, 1.5]))
def test_save_grid_raises_only_named_errors(images, nrow, scale, tmp_path_factory: pytest.TempPathFactory) -> None:
    from mnist_diffusion.pipeline import save_grid

    try:
        save_grid(images, tmp_path_factory.mktemp("grid") / "g.png", nrow=nrow, scale=scale)
    except (TypeError, ValueError) as error:
        assert _named(error, ["images", "nrow", "scale"]), error
