"""Hostile or careless files: a planted run directory, crafted PNGs and archives, crafted checkpoint
fields, odd MNIST files and file names. Each ends in one line and exit 1 or 2, with nothing written
outside the place it names and no temporary left behind."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import struct
import subprocess
import sys
import threading
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from mnist_diffusion import files
from mnist_diffusion.config import SampleConfig
from mnist_diffusion.figures import training_grids
from mnist_diffusion.rundir import RunDirectory, RunDirError
from test_bad_input import rewrite_header, rewrite_tensors
from worker import make_trainer

from conftest import assert_one_line_error, run_cli


def train_args(run_dir: Path, mnist_root: Path, *extra: str) -> list[str]:
    return ["train", "--run-dir", str(run_dir), "--preset", "tiny", "--max-steps", "2", "--batch-size", "32",
            "--timesteps", "50", "--data-root", str(mnist_root), *extra]


# -- the run directory -------------------------------------------------------------------------

def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path: Path, mnist_root: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("the user's own words\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.lock").symlink_to(victim)
    code, _, err = run_cli(capsys, *train_args(run, mnist_root))
    assert_one_line_error(code, err, "train.lock is a symbolic link")
    assert victim.read_text() == "the user's own words\n"


def test_a_hard_linked_lock_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (tmp_path / "run").mkdir()
    os.link(victim, tmp_path / "run" / "train.lock")
    with pytest.raises(RuntimeError, match="has other hard links"):
        make_trainer(tmp_path / "run", 2).run()
    assert victim.read_text() == "keep me"


@pytest.mark.parametrize("planted", ["metrics.jsonl", "checkpoints", "samples", "config.json"])
def test_a_symlinked_entry_of_the_run_directory_is_refused(tmp_path: Path, planted: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / planted).symlink_to(outside if planted in ("checkpoints", "samples") else outside / "f")
    with pytest.raises(ValueError, match=f"{planted} is a symbolic link"):
        make_trainer(tmp_path / "run", 2)
    assert list(outside.iterdir()) == []


def test_a_directory_that_is_not_a_run_is_refused_and_left_as_it_was(tmp_path: Path, mnist_root: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`train --run-dir .` in a project that has its own config.json, metrics.jsonl and samples/."""
    project = tmp_path / "project"
    (project / "samples").mkdir(parents=True)
    (project / "config.json").write_text('{"my": "settings"}')
    (project / "metrics.jsonl").write_text('{"accuracy": 0.9}\n')
    (project / "samples" / "mine.png").write_bytes(b"png")
    before = {path: path.read_bytes() for path in project.rglob("*") if path.is_file()}
    code, _, err = run_cli(capsys, *train_args(project, mnist_root))
    assert_one_line_error(code, err, "holds files that are not a training run of mnist-diffusion (config.json)")
    assert "resume" in err
    assert {path: path.read_bytes() for path in project.rglob("*") if path.is_file()} == before


def test_other_files_beside_a_run_are_refused_but_a_run_resumes(tmp_path: Path, mnist_root: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert run_cli(capsys, *train_args(run, mnist_root))[0] == 0
    assert run_cli(capsys, *train_args(run, mnist_root, "--resume", "--max-steps", "3"))[0] == 0  # its own files
    (run / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, *train_args(run, mnist_root, "--max-steps", "4"))
    assert_one_line_error(code, err, "(notes.txt)")


def test_an_interrupted_run_before_its_first_checkpoint_is_still_a_run(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    with run.held():
        run.write_config({}, {}, {})
        run.append_metrics({"step": 50, "loss": 0.1})
    run.check_is_run()  # no error: this package's own files


def test_a_metrics_log_with_bytes_that_are_not_utf8_does_not_stop_a_resume(tmp_path: Path) -> None:
    make_trainer(tmp_path / "run", 3).run()
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_bytes(metrics.read_bytes() + b'{"step": 9\xff\xfe}\n')
    result = make_trainer(tmp_path / "run", 4).run()
    assert result.step == 4
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


# -- crafted images and archives ---------------------------------------------------------------

def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` greyscale pixels, with one tiny data chunk."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(60000, 60000), (20000, 20000), (29, 28)])
@pytest.mark.parametrize("option", ["--images", "--mask"])
def test_png_size_is_checked_from_its_header(tmp_path: Path, tiny_checkpoint: Path, size: tuple[int, int],
                                             option: str, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(*size))
    inputs = {"--images": str(bomb), "--mask": "lower"} if option == "--images" else {"--images": str(bomb),
                                                                                      "--mask": str(bomb)}
    if option == "--mask":
        digit = tmp_path / "digit.png"
        from PIL import Image

        Image.fromarray(np.zeros((28, 28), np.uint8)).save(digit)
        inputs["--images"] = str(digit)
    code, _, err = run_cli(capsys, "complete", "--images", inputs["--images"], "--mask", inputs["--mask"],
                           "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "c.png"))
    assert_one_line_error(code, err, f"{option} {bomb}")
    assert "28x28" in err


def npz_with_header(path: Path, shape: tuple[int, ...], data: bytes = b"", dtype: str = "|u1") -> Path:
    """An .npz whose `images.npy` header claims `shape` of `dtype`, followed by `data`."""
    header = f"{{'descr': '{dtype}', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    member = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("images.npy", member)
    return path


def corrupt_crc(path: Path) -> Path:
    np.savez(path, images=np.zeros((4, 28, 28), np.uint8))
    data = bytearray(path.read_bytes())
    position = data.index(b"NUMPY") + 200  # a byte of the stored (uncompressed) array data
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("make", [
    lambda path: path.write_bytes(b"PK\x03\x04" + b"\x00" * 200) and path,
    corrupt_crc,
    lambda path: npz_with_header(path, (100_000_000_000, 28, 28)),
    lambda path: npz_with_header(path, (1_500_000, 28, 28), b"\x00" * 1000),
    lambda path: npz_with_header(path, (4, 28, 28), b"\x00" * 10),
    lambda path: npz_with_header(path, (4, 28, 28), b"\x00" * 4000),
    lambda path: npz_with_header(path, (4,), b"\x00" * 8, dtype="|O"),
], ids=["zeros", "bad-crc", "1e11-images", "zip-bomb", "short", "long", "objects"])
@pytest.mark.parametrize("command", ["complete", "evaluate"])
def test_crafted_archives_are_refused_from_their_headers(tmp_path: Path, tiny_checkpoint: Path, make, command: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = make(tmp_path / "digits.npz")
    if command == "complete":
        argv = ["complete", "--images", str(path), "--mask", "lower", "--checkpoint", str(tiny_checkpoint),
                "--out", str(tmp_path / "c.png")]
    else:
        argv = ["evaluate", "--samples", str(path), "--out-dir", str(tmp_path / "eval"), "--data-root",
                str(tmp_path / "no-data")]
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, str(path))


def test_evaluate_refuses_more_samples_than_the_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "many.npz"
    np.savez_compressed(path, images=np.zeros((100_001, 28, 28), np.uint8))
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(path), "--out-dir", str(tmp_path / "eval"),
                           "--data-root", str(tmp_path / "no-data"))
    assert_one_line_error(code, err, "holds 100,001 images; at most 100,000 are allowed")


# -- crafted checkpoints -----------------------------------------------------------------------

def test_metadata_nested_thousands_deep_is_one_line(tmp_path: Path, tiny_checkpoint: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    tensors = load_file(str(tiny_checkpoint))
    deep = tmp_path / "deep.safetensors"
    save_file(tensors, str(deep), metadata={"json": '{"a":' * 100_000 + "1" + "}" * 100_000})
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(deep), "--num", "1", "--out", str(tmp_path / "s.png"))
    assert_one_line_error(code, err, f"{deep} is a safetensors file but not an mnist-diffusion checkpoint")


def train_checkpoint(tmp_path: Path) -> Path:
    """The one checkpoint of a short run (the older ones removed, so a resume has no other to fall back to)."""
    make_trainer(tmp_path / "run", 2).run()
    *older, (_, newest) = RunDirectory(tmp_path / "run").checkpoints()
    for _, path in older:
        path.unlink()
    return newest


def set_field(section: str | None, key: str, value, **more):
    """An edit of a checkpoint header: `key` (and the keys of `more`) set in `section` (None: the top)."""
    def edit(meta: dict) -> None:
        (meta[section] if section else meta).update({key: value, **more})

    return edit


@pytest.mark.parametrize(("edit", "message"), [
    (set_field(None, "optimizer_param_groups", [1]), "list of JSON objects"),
    (set_field(None, "optimizer_param_groups", [{"params": "x"}]), "needs 'params'"),
    (set_field(None, "optimizer_param_groups", [{"params": [0], "lr": "fast"}]), "optimizer setting 'lr'"),
    (set_field("train_config", "warmup_steps", "200"), "warmup_steps must be a whole number"),
    (set_field("train_config", "grad_clip", "x"), "grad_clip must be a finite number"),
    (set_field("train_config", "batch_size", 2.5), "batch_size must be a whole number"),
    (set_field("train_config", "weight_decay", -1.0), "weight_decay must be >= 0"),
    (set_field("extra", "elapsed_s", [1]), "extra.elapsed_s must be a time"),
    (set_field("extra", "elapsed_s", float("nan")), "extra.elapsed_s must be a time"),
    (set_field("extra", "elapsed_s", -1e12), "extra.elapsed_s must be a time"),
    (set_field("extra", "elapsed_s", None), "extra.elapsed_s must be a time"),
    (set_field("diffusion_config", "beta_start", 0.9999, beta_end=0.99999), "strictly between 0 and 1"),
    (set_field("diffusion_config", "beta_start", 1e-300, beta_end=1e-300), "strictly between 0 and 1"),
])
def test_crafted_fields_name_the_file_on_resume(tmp_path: Path, mnist_root: Path, edit, message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = train_checkpoint(tmp_path)
    rewrite_header(path, path, edit)
    code, out, err = run_cli(capsys, *train_args(tmp_path / "run", mnist_root, "--resume", "--max-steps", "4",
                                                 "--max-minutes", "5"))
    assert code == 2 and "Traceback" not in err and "done" not in out, err
    assert str(path) in err and message in err, err
    assert err.strip().splitlines()[-1].startswith("mnist-diffusion: error: none of the 1 checkpoints")


def test_an_optimizer_tensor_of_the_wrong_shape_is_named(tmp_path: Path, mnist_root: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = train_checkpoint(tmp_path)

    def shrink(tensors: dict) -> None:
        name = next(name for name in tensors if name.startswith("optim.") and name.endswith(".exp_avg"))
        tensors[name] = tensors[name].flatten()[:3].clone()

    rewrite_tensors(path, path, shrink)
    code, _, err = run_cli(capsys, *train_args(tmp_path / "run", mnist_root, "--resume", "--max-steps", "4"))
    assert code == 2 and "Traceback" not in err and str(path) in err and "optimizer state 'exp_avg'" in err, err


@pytest.mark.parametrize(("change", "message"), [
    (lambda value: torch.full_like(value, float("nan")), "holds NaN or infinite values"),
    (lambda value: value.to(torch.int8), "holds torch.int8 values"),
])
def test_weights_that_are_not_finite_floats_are_refused(tmp_path: Path, tiny_checkpoint: Path, change, message: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def edit(tensors: dict) -> None:
        for name in tensors:
            tensors[name] = change(tensors[name])

    bad = rewrite_tensors(tiny_checkpoint, tmp_path / "bad.safetensors", edit)
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(bad), "--num", "1", "--out", str(tmp_path / "s.png"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "s.png").exists()


def test_an_unreadable_checkpoint_says_permission_denied(tmp_path: Path, tiny_checkpoint: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    real_access = os.access
    monkeypatch.setattr(files.os, "access",
                        lambda path, mode: Path(path) != tiny_checkpoint and real_access(path, mode))
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "1",
                           "--out", str(tmp_path / "s.png"))
    assert code == 1 and "permission denied" in err and str(tiny_checkpoint) in err and "Traceback" not in err


def test_an_unwritable_output_directory_exits_1(tmp_path: Path, tiny_checkpoint: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(files.os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "1",
                           "--out", str(locked / "s.png"))
    assert code == 1 and "not writable" in err and str(locked) in err and len(err.strip().splitlines()) == 1


# -- names, MNIST files, signals ---------------------------------------------------------------

def test_a_long_legal_name_is_written_and_a_too_long_one_refused_before_work(
        tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_png, long_npz = tmp_path / ("d" * 242 + ".png"), tmp_path / ("n" * 242 + ".npz")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "2", "--out",
                           str(long_png), "--npz", str(long_npz), "--steps", "2")
    assert code == 0, err
    assert long_png.exists() and long_npz.exists()
    too_long = tmp_path / ("x" * 296 + ".png")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "2", "--out",
                           str(tmp_path / "ok.png"), "--npz", str(too_long.with_suffix(".npz")))
    assert_one_line_error(code, err, "is 300 bytes long; file systems allow 255")
    assert not (tmp_path / "ok.png").exists()  # refused before any work
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([long_png.name, long_npz.name,
                                                                       tiny_checkpoint.name])


@pytest.mark.parametrize("length", range(247, 257))
def test_every_name_length_up_to_255_bytes_is_written_and_256_refused_first(
        tmp_path: Path, tiny_checkpoint: Path, length: int, capsys: pytest.CaptureFixture[str]) -> None:
    """The probe's names of 247-255 bytes failed after the work (their temporaries were longer)."""
    png, npz = tmp_path / ("d" * (length - 4) + ".png"), tmp_path / ("n" * (length - 4) + ".npz")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "2", "--steps", "1",
                           "--out", str(png), "--npz", str(npz))
    written = sorted(path.name for path in tmp_path.iterdir() if path.name != tiny_checkpoint.name)
    if length <= 255:
        assert code == 0 and written == sorted([png.name, npz.name]), err
    else:
        assert_one_line_error(code, err, "is 256 bytes long; file systems allow 255")
        assert written == []  # refused before the work: nothing, no temporary


def run_module(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mnist_diffusion", *argv], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("name", ["t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"])
def test_a_fifo_among_the_mnist_files_is_refused(tmp_path: Path, name: str) -> None:
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    os.mkfifo(raw / name)
    result = run_module("download", "--root", str(tmp_path / "data"))  # hung forever while hashing
    assert result.returncode == 2 and "not a regular file" in result.stderr and str(raw / name) in result.stderr


def test_a_dangling_link_among_the_mnist_files_is_not_written_through(tmp_path: Path, mnist_root: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    raw = mnist_root / "MNIST" / "raw"
    name = "t10k-labels-idx1-ubyte"
    with open(raw / f"{name}.gz", "wb") as handle:
        handle.write(__import__("gzip").compress((raw / name).read_bytes()))
    (raw / name).unlink()
    (raw / name).symlink_to(tmp_path / "elsewhere")
    code, _, err = run_cli(capsys, "download", "--root", str(mnist_root))
    assert_one_line_error(code, err, f"{raw / name} does not exist")
    assert not (tmp_path / "elsewhere").exists()


def test_a_full_disk_while_expanding_a_gz_keeps_the_gz_and_exits_1(tmp_path: Path, mnist_root: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import gzip

    raw = mnist_root / "MNIST" / "raw"
    name = "t10k-labels-idx1-ubyte"
    (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
    (raw / name).unlink()

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    code, _, err = run_cli(capsys, "download", "--root", str(mnist_root))
    assert code == 1 and "No space left on device" in err and "delete" not in err, err
    assert (raw / f"{name}.gz").exists() and not (raw / name).exists()
    assert [path.name for path in raw.iterdir() if path.name.endswith(".tmp")] == []


def test_sigterm_while_writing_leaves_no_temporary(tmp_path: Path, tiny_checkpoint: Path) -> None:
    script = f"""
import os, signal, sys
import numpy as np
from mnist_diffusion import cli
def killed_while_writing(handle, **arrays):
    handle.write(b"half")
    handle.flush()
    os.kill(os.getpid(), signal.SIGTERM)
np.savez_compressed = killed_while_writing
sys.exit(cli.main(["sample", "--checkpoint", {str(tiny_checkpoint)!r}, "--num", "2", "--steps", "2",
                   "--out", {str(tmp_path / "s.png")!r}, "--npz", {str(tmp_path / "s.npz")!r}]))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 143 and "terminated" in result.stderr and "Traceback" not in result.stderr
    assert not [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


def test_complete_eta_with_repaint_names_the_method(tmp_path: Path, tiny_checkpoint: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    digit = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(digit)
    code, _, err = run_cli(capsys, "complete", "--images", str(digit), "--mask", "lower", "--eta", "0.5",
                           "--checkpoint", str(tiny_checkpoint))
    assert_one_line_error(code, err, "--eta and --noise-below apply to --method replace")


def test_figures_say_what_they_are_drawing_and_odd_logs_give_no_warning(tmp_path: Path, tiny_checkpoint: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 0}\n{"step": 2, "loss": -1}\n')
    code, _, err = run_cli(capsys, "figures", "--checkpoint", str(tiny_checkpoint), "--run-dir", str(run),
                           "--out-dir", str(tmp_path / "figures"), "--data-root", str(tmp_path / "no-data"))
    assert code == 0, err
    assert "drawing the reverse process (50 steps)" in err and "warning" not in err.lower()
    assert (tmp_path / "figures" / "loss_curve.png").exists()


@pytest.mark.parametrize(("shape", "message"), [((-1, 28, 28), "negative dimension"),
                                                ((100000, 28, 28), "the archive holds")])
def test_a_shape_bomb_npz_is_refused_at_its_header_with_little_memory(tmp_path: Path, shape: tuple, message: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A header of shape (-1, 28, 28) over 60 MB of zeros once inflated them all (1.4 GB peak for 600 MB)."""
    import tracemalloc

    bomb = npz_with_header(tmp_path / "bomb.npz", shape, bytes(60 << 20))
    assert bomb.stat().st_size < 200_000
    tracemalloc.start()
    code, _, err = run_cli(capsys, "complete", "--images", str(bomb), "--mask", "lower")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert_one_line_error(code, err, message)
    assert peak < 8 << 20, peak  # refused from the header: far less than the 60 MB it would inflate


def test_a_corrupt_deflate_stream_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = npz_with_header(tmp_path / "good.npz", (2, 28, 28), bytes(2 * 784))
    data = bytearray(good.read_bytes())
    start = data.index(b"images.npy") + len("images.npy")
    data[start + 5:start + 25] = b"\xff" * 20  # inside the deflated data of the member
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(data))
    code, _, err = run_cli(capsys, "complete", "--images", str(damaged), "--mask", "lower")
    assert_one_line_error(code, err, "is not a readable .npz archive")


def _outside_with_decoys(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A directory outside the run holding files named as a run's checkpoints and grids are."""
    outside = tmp_path / "outside"
    outside.mkdir()
    decoys = {f"step_{step:08d}.{suffix}": f"decoy {step}".encode()
              for step in range(1, 4) for suffix in ("safetensors", "png")}
    for name, data in decoys.items():
        (outside / name).write_bytes(data)
    return outside, decoys


def _untouched(outside: Path, decoys: dict[str, bytes]) -> bool:
    return {path.name: path.read_bytes() for path in outside.iterdir()} == decoys


@pytest.mark.parametrize("swapped", ["checkpoints", "samples"])
def test_a_sub_folder_swapped_for_a_link_mid_run_is_not_written_through(tmp_path: Path, swapped: str) -> None:
    """After step 2 `swapped` is moved away and a link to another directory put in its place: the
    training stops with a message naming it, and nothing in the link's target is created or removed."""
    outside, decoys = _outside_with_decoys(tmp_path)
    run = tmp_path / "run"

    def swap_after_step_two(row: dict) -> None:
        if row["step"] == 2:
            (run / swapped).rename(tmp_path / f"{swapped}.moved")
            (run / swapped).symlink_to(outside, target_is_directory=True)

    trainer = make_trainer(run, 6, on_log=swap_after_step_two)
    trainer.config = dataclasses.replace(trainer.config, sample_every=1)
    trainer.on_sample = training_grids(trainer.run_dir.write_sample, trainer.schedule,
                                       SampleConfig(steps=2, sampler="ddim"))
    with pytest.raises(RunDirError, match=f"{swapped} was replaced by a symbolic link"):
        trainer.run()
    assert _untouched(outside, decoys)
    moved = sorted(path.name for path in (tmp_path / f"{swapped}.moved").iterdir())
    assert moved and all(name.startswith("step_0000000") for name in moved)  # written before the swap


def test_links_swapped_in_and_out_while_training_runs_never_redirect_a_write(tmp_path: Path) -> None:
    """A background thread swaps both sub-folders for links to another directory and back, as fast as
    it can, for the whole run: whatever the interleaving, the other directory is never changed."""
    outside, decoys = _outside_with_decoys(tmp_path)
    run = tmp_path / "run"
    trainer = make_trainer(run, 40)
    trainer.on_sample = training_grids(trainer.run_dir.write_sample, trainer.schedule,
                                       SampleConfig(steps=1, sampler="ddim"))
    trainer.config = dataclasses.replace(trainer.config, sample_every=1)
    started, done = threading.Event(), threading.Event()
    trainer.on_log = lambda row: started.set()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        started.wait()
        while not done.is_set():
            for name in ("checkpoints", "samples"):
                real, away = run / name, run / f"{name}.away"
                with contextlib.suppress(OSError):  # the trainer may have made the folder again meanwhile
                    real.rename(away)
                    real.symlink_to(outside, target_is_directory=True)
                    swaps += 1
                with contextlib.suppress(OSError):
                    if real.is_symlink():
                        real.unlink()
                    away.rename(real)

    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        with contextlib.suppress(RunDirError):
            trainer.run()
    finally:
        started.set()
        done.set()
        thread.join()
    assert swaps > 0
    assert _untouched(outside, decoys)


SIGNALLED_RUN = """
import os, signal, sys
from mnist_diffusion import cli, progress

class Stderr:
    # A second signal arrives while the first one's exit message is written (the clean-up it started).
    def __init__(self, real):
        self.real = real
    def write(self, text):
        if "terminated" in text or "interrupted" in text:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        return self.real.write(text)
    def __getattr__(self, name):
        return getattr(self.real, name)

def update(self, count=1):
    sys.stderr = Stderr(sys.stderr)
    os.kill(os.getpid(), signal.{first})  # mid-work, from the progress of the drawing
    os.kill(os.getpid(), signal.{first})

progress.LineProgress.update = update
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, not a background job
sys.exit(cli.main({argv!r}))
"""


@pytest.mark.parametrize("first", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("command", ["complete", "interpolate", "sample"])
def test_signals_during_any_command_stop_it_once_with_one_line(tmp_path: Path, tiny_checkpoint: Path,
                                                                 command: str, first: str) -> None:
    """SIGTERM or Ctrl-C mid-work stops every drawing command (143 or 130) with one line; second and
    third signals that arrive during its clean-up are ignored instead of escaping as tracebacks."""
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "digit.png")
    argv = {"complete": ["complete", "--images", str(tmp_path / "digit.png"), "--mask", "lower", "--num", "1"],
            "interpolate": ["interpolate", "--seeds", "1,2", "--digit", "3", "--frames", "3"],
            "sample": ["sample", "--num", "4"]}[command]
    argv += ["--checkpoint", str(tiny_checkpoint), "--steps", "2", "--out", str(tmp_path / "out" / "out.png")]
    result = subprocess.run([sys.executable, "-c", SIGNALLED_RUN.format(first=first, argv=argv)],
                            capture_output=True, text=True, timeout=120)
    expected = {"SIGTERM": (143, "terminated"), "SIGINT": (130, "interrupted")}[first]
    last = result.stderr.strip().splitlines()[-1]
    assert (result.returncode, last) == (expected[0], f"mnist-diffusion: {expected[1]}"), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()  # no output, no temporary, no directory


# -- the environment ---------------------------------------------------------------------------

def _console(*argv: str, cwd: Path | None = None, memory_bytes: int | None = None) -> subprocess.CompletedProcess:
    """The `mnist-diffusion` console script's entry point in a fresh process (the one pip installs)."""
    import resource

    def limit() -> None:
        if memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))

    script = "import sys; from mnist_diffusion.__main__ import start; sys.exit(start())"
    return subprocess.run([sys.executable, "-c", script, *argv], cwd=cwd, preexec_fn=limit, capture_output=True,
                          text=True, timeout=300)


def test_a_deleted_working_directory_is_one_line_not_a_onemkl_fatal_error(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    script = ("import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
              "from mnist_diffusion.__main__ import start; sys.exit(start())")
    result = subprocess.run([sys.executable, "-c", script, str(gone), "sample", "--num", "2", "--out",
                             str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stderr.strip().splitlines() == [
        "mnist-diffusion: error: the current directory no longer exists; cd to one that does"]


@pytest.mark.parametrize("megabytes", [300, 1500])
def test_too_little_memory_is_one_line_whether_torch_loads_or_not(tmp_path: Path, megabytes: int) -> None:
    """Under an address-space limit: too little to load torch (300 MB), or enough to load it but not
    for one network pass of the shipped model over 4,096 digits (1.5 GB)."""
    result = _console("sample", "--num", "4096", "--max-batch", "4096", "--steps", "1",
                      "--out", str(tmp_path / "x.png"), memory_bytes=megabytes * 2**20)
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert last.startswith("mnist-diffusion: error: ") and "memory" in last
    assert not (tmp_path / "x.png").exists()
