"""What a careless or hostile user can do to the CLI: each case ends in exit 0, 1 or 2 with one line,
and nothing is lost. Numbers in the docstrings are the items of the robustness review."""

from __future__ import annotations

import errno
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mnist_diffusion import data
from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
from mnist_diffusion.config import DiffusionConfig, preset
from mnist_diffusion.rundir import RunDirectory
from mnist_diffusion.unet import UNet
from worker import make_trainer

from conftest import assert_one_line_error, run_cli


def rewrite_header(source: Path, target: Path, edit) -> Path:
    """Copy a checkpoint with its JSON metadata changed by `edit(meta)` (which may return a new value)."""
    with safe_open(str(source), "pt") as handle:
        meta = json.loads(handle.metadata()["json"])
    meta = edit(meta) or meta
    save_file(load_file(str(source)), str(target), metadata={"json": json.dumps(meta)})
    return target


def rewrite_tensors(source: Path, target: Path, edit) -> Path:
    """Copy a checkpoint with its tensors changed by `edit(tensors)`, the metadata kept."""
    with safe_open(str(source), "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(source))
    edit(tensors)
    save_file(tensors, str(target), metadata=metadata)
    return target


# -- data loss ---------------------------------------------------------------------------------

def test_resume_refuses_when_no_checkpoint_loads_and_touches_nothing(tmp_path: Path, mnist_root: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """1. All checkpoints corrupt: `train --resume` used to start from step 0, then its clean-up
    deleted the new checkpoint (the corrupt `step_10`..`step_30` sorted after it)."""
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    for step in (10, 20, 30):
        (checkpoints / f"step_{step:08d}.safetensors").write_bytes(b"garbage" * 10)
    before = sorted(p.name for p in checkpoints.iterdir())
    code, out, err = run_cli(capsys, "train", "--run-dir", str(tmp_path / "run"), "--resume", "--preset", "tiny",
                             "--max-steps", "5", "--batch-size", "32", "--data-root", str(mnist_root))
    assert code == 2 and "none of the 3 checkpoints" in err and "nothing was changed" in err, err
    assert "Traceback" not in err and "done" not in out
    assert sorted(p.name for p in checkpoints.iterdir()) == before
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_clean_up_orders_by_step_and_leaves_foreign_files_alone(tmp_path: Path) -> None:
    """1. Files not named step_<8 digits> are not this package's: never counted, never deleted;
    the reported final checkpoint exists."""
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    foreign = [checkpoints / name for name in ("step_10.safetensors", "step_20.safetensors", "notes.txt")]
    for path in foreign:
        path.write_text("not ours")
    result = make_trainer(tmp_path / "run", 6).run()
    assert result.checkpoint.exists() and result.step == 6
    steps = [step for step, _ in RunDirectory(tmp_path / "run").checkpoints()]
    assert steps == [4, 5, 6]  # keep_checkpoints = 3, ordered by the number
    assert all(path.exists() for path in foreign)


def test_sample_npz_is_written_atomically(tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """2. A full disk while writing --npz destroyed the previous file and left a partial one, after
    "wrote" had been printed; the error did not name the file. Round 4: the PNG written before it was
    left behind, new beside the old archive; a command's outputs are now written together or not at all."""
    npz = tmp_path / "x.npz"
    npz.write_bytes(b"the previous archive")
    (tmp_path / "x.png").write_bytes(b"the previous grid")

    def savez_that_fills_the_disk(handle, **arrays):
        handle.write(b"partial" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", savez_that_fills_the_disk)
    code, out, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "4", "--steps", "2",
                             "--out", str(tmp_path / "x.png"), "--npz", str(npz))
    assert code == 1 and "No space left on device" in err and str(npz) in err and "Traceback" not in err
    assert npz.read_bytes() == b"the previous archive"
    assert (tmp_path / "x.png").read_bytes() == b"the previous grid"
    assert "wrote" not in out
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- tracebacks --------------------------------------------------------------------------------

def test_ddim_eta_is_bounded(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """4. `--eta 1e300` raised OverflowError."""
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--sampler", "ddim",
                           "--eta", "1e300")
    assert_one_line_error(code, err, "--eta must be in [0, 1]")


@pytest.mark.parametrize(("meta", "message"), [
    ([1, 2], "not an mnist-diffusion checkpoint"),
    ("a string", "not an mnist-diffusion checkpoint"),
])
def test_metadata_that_is_not_an_object(tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str],
                                        meta: object, message: str) -> None:
    """5. Metadata JSON that is a list raised AttributeError."""
    bad = rewrite_header(tiny_checkpoint, tmp_path / "bad.safetensors", lambda _: meta)
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(bad), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, message)


def five_class_checkpoint(tmp_path: Path) -> Path:
    config = preset("tiny", num_classes=5)
    return save_checkpoint(Checkpoint(config, DiffusionConfig(num_timesteps=10), UNet(config).state_dict()),
                           tmp_path / "five.safetensors")


def test_digits_are_checked_against_the_models_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """6. A 5-class model asked for a 7 (or default labels for --num 10) raised IndexError."""
    path = five_class_checkpoint(tmp_path)
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(path), "--digit", "7",
                           "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "digit 7 is not one of this model's 5 classes (0-4)")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(path), "--num", "10", "--steps", "2",
                           "--out", str(tmp_path / "y.png"), "--npz", str(tmp_path / "y.npz"))
    assert code == 0, err
    with np.load(tmp_path / "y.npz") as saved:
        assert sorted(saved["labels"].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


@pytest.mark.parametrize(("line", "message"), [
    ('{"loss": 0.5}', "line 2: 'step' must be a whole number"),
    ('"a bare string"', "line 2: expected a JSON object, got str"),
    ('{"step": 2, "loss": "high"}', "line 2: 'loss' must be a finite number"),
    ('{"step": 2, "loss": NaN}', "line 2: 'loss' must be a finite number"),
])
def test_figures_validate_the_metrics_log_before_drawing(tmp_path: Path, tiny_checkpoint: Path, line: str,
                                                         message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """7. A bad metrics line raised KeyError/TypeError, once after three figures were drawn."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 0.9}\n' + line + '\n{"step": 3, "loss": 0.4}\n')
    out_dir = tmp_path / "figures"
    code, _, err = run_cli(capsys, "figures", "--checkpoint", str(tiny_checkpoint), "--run-dir", str(run_dir),
                           "--out-dir", str(out_dir))
    assert_one_line_error(code, err, message)
    assert str(run_dir / "metrics.jsonl") in err
    assert not out_dir.exists()  # nothing drawn, not even the directory


# -- wrong behaviour ---------------------------------------------------------------------------

def test_newest_checkpoint_with_wrong_tensors_is_skipped_on_resume(tmp_path: Path) -> None:
    """8. A valid header with the wrong tensors failed the resume with a multi-line dump, where the
    README promises the checkpoint before it is used."""
    make_trainer(tmp_path / "run", 4).run()
    newest = RunDirectory(tmp_path / "run").checkpoints()[-1][1]
    rewrite_tensors(newest, newest, lambda tensors: tensors.update({"model.out.2.weight": torch.zeros(3, 3)}))
    messages: list[str] = []
    trainer = make_trainer(tmp_path / "run", 6, on_message=messages.append)
    assert trainer.step == 3
    assert any("step_00000004.safetensors" in m and "model.out.2.weight" in m for m in messages), messages
    assert trainer.run().step == 6


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.pop("model.out.2.bias"), "tensor 'model.out.2.bias' is missing"),
    (lambda t: t.update({"model.extra.weight": torch.zeros(1)}), "'model.extra.weight' is not part of the model"),
    (lambda t: t.update({"model.out.2.weight": torch.zeros(1, 8, 3, 1)}), "has shape [1, 8, 3, 1]"),
])
def test_wrong_tensors_are_one_line_naming_the_file(tmp_path: Path, tiny_checkpoint: Path, edit, message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """10. Wrong names or shapes gave an 8.5 KB message without the file; export copied them."""
    bad = rewrite_tensors(tiny_checkpoint, tmp_path / "bad.safetensors", edit)
    for argv in (["sample", "--checkpoint", str(bad), "--out", str(tmp_path / "x.png")],
                 ["export", "--checkpoint", str(bad), "--out", str(tmp_path / "exported.safetensors")]):
        code, _, err = run_cli(capsys, *argv)
        assert_one_line_error(code, err, message)
        assert str(bad) in err and len(err) < 400
    assert not (tmp_path / "exported.safetensors").exists()


def test_sizes_are_bounded_before_anything_is_allocated(tmp_path: Path, tiny_checkpoint: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """11. --num 1e9 and --per-digit 1e8 allocated 8 GB of labels; a header asking for 4096
    channels allocated 1.2 GB before any check."""
    code, _, err = run_cli(capsys, "sample", "--num", "1000000000")
    assert_one_line_error(code, err, "between 1 and 100,000")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--digits", "0-9",
                           "--per-digit", "100000")
    assert_one_line_error(code, err, "more than the 100,000 digits")
    wide = rewrite_header(tiny_checkpoint, tmp_path / "wide.safetensors",
                          lambda meta: meta["model_config"].update(base_channels=4096))
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(wide), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "base_channels must be a whole number in [1, 1024], got 4096")


def test_a_fifo_is_refused_instead_of_read_forever(tmp_path: Path) -> None:
    """12. A named pipe as --checkpoint or --samples hung forever."""
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    for argv in (["sample", "--checkpoint", str(fifo), "--out", str(tmp_path / "x.png")],
                 ["evaluate", "--samples", str(fifo), "--out-dir", str(tmp_path / "eval")]):
        result = subprocess.run([sys.executable, "-m", "mnist_diffusion", *argv], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2 and "not a regular file" in result.stderr, result.stderr


# -- unclear messages --------------------------------------------------------------------------

def test_seed_out_of_range_names_the_range(capsys: pytest.CaptureFixture[str]) -> None:
    """13. --seed 2**64 said "Overflow when unpacking long long"."""
    code, _, err = run_cli(capsys, "sample", "--seed", str(2**64))
    assert_one_line_error(code, err, "must be between 0 and 9,223,372,036,854,775,807")


def test_format_version_as_a_string_is_named(tmp_path: Path, tiny_checkpoint: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """14. format_version "1" said "has format version 1; this reads version 1"."""
    bad = rewrite_header(tiny_checkpoint, tmp_path / "v.safetensors", lambda meta: meta.update(format_version="1"))
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(bad), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, 'format_version must be the number 1, got "1"')


def samples_file(path: Path, count: int, **extra: np.ndarray) -> Path:
    np.savez(path, images=np.zeros((count, 28, 28), np.uint8), **extra)
    return path


@pytest.mark.parametrize(("count", "extra", "message"), [
    (0, {}, "got 0 images; the metrics need at least 6"),
    (1, {}, "got 1 images; the metrics need at least 6"),
    (3, {}, "got 3 images; the metrics need at least 6"),
    (20, {"labels": np.zeros(19, np.int64)}, "labels must be one digit per image, shaped (20,), got (19,)"),
    (20, {"labels": np.zeros((20, 1), np.int64)}, "labels must be one digit per image"),
    (20, {"labels": np.array(["7"] * 20)}, "labels must be integers 0-9, got <U1"),
    (20, {"labels": np.full(20, np.nan)}, "labels must be integers 0-9, got float64"),
    (20, {"labels": np.full(20, 12)}, "labels must be digits 0-9, got values from 12 to 12"),
])
def test_evaluate_checks_the_whole_sample_file_before_any_work(tmp_path: Path, count: int, extra: dict, message: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """15. N=0/1/3 crashed in torch or numpy; wrong labels failed after ~10 s of scoring; NaN labels
    silently scored 0. No MNIST is available here, so reaching the data step would fail differently."""
    path = samples_file(tmp_path / "s.npz", count, **extra)
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(path), "--out-dir", str(tmp_path / "eval"),
                           "--data-root", str(tmp_path / "no-data"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "no-data").exists()


def test_evaluate_names_a_file_that_is_not_an_npz(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """15. A non-zip file got numpy's advice to load it "unsafely using allow_pickle"."""
    path = tmp_path / "s.npz"
    path.write_bytes(os.urandom(300))
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(path), "--out-dir", str(tmp_path / "eval"))
    assert_one_line_error(code, err, "is not a readable .npz archive")
    assert "allow_pickle" not in err


def test_a_bad_gz_is_named_as_the_file_to_replace(mnist_root: Path) -> None:
    """16. A .gz with the wrong content was reported as its extracted file ("delete it"), and
    deleting that only extracted the same bad bytes again."""
    raw = data.raw_dir(mnist_root)
    name = "t10k-labels-idx1-ubyte"
    (raw / name).unlink()
    (raw / (name + ".gz")).write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
    for _ in range(2):  # the same answer when run again
        with pytest.raises(data.DataError, match=rf"{name}\.gz does not hold the expected {name}.*delete .*\.gz"):
            data.ensure_mnist(mnist_root, timeout=0.01)
        assert not (raw / name).exists()


def test_eta_and_guidance_are_not_silently_ignored_or_unbounded(tiny_checkpoint: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """17. --eta was ignored by samplers other than DDIM; --guidance 1e308 drew noise. So is --noise-below
    refused where nothing would use it."""
    for sampler in ("dpm++2m", "unipc"):
        code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--eta", "0.5",
                               "--sampler", sampler)
        assert_one_line_error(code, err, f"--eta applies only to sampler ddim or dpm++2m-sde, not {sampler}")
    code, _, err = run_cli(capsys, "sample", "--guidance", "1e308")
    assert_one_line_error(code, err, "--guidance must be in [0, 20]")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--noise-below", "0.5")
    assert_one_line_error(code, err, "--noise-below applies only to sampler dpm++2m-sde")
    for share, message in (("0", "is a share of T in (0, 1]"), ("1.5", "is a share of T in (0, 1]"),
                           ("nan", "must be a finite number")):
        code, _, err = run_cli(capsys, "sample", "--sampler", "dpm++2m-sde", "--noise-below", share)
        assert_one_line_error(code, err, message)
        assert "--noise-below" in err
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    code, _, err = run_cli(capsys, "complete", "--checkpoint", str(tiny_checkpoint), "--images",
                           str(tmp_path / "x.png"), "--mask", "lower", "--sampler", "dpm++2m-sde",
                           "--noise-below", "0.5", "--method", "repaint", "--out", str(tmp_path / "c.png"))
    assert_one_line_error(code, err, "--eta and --noise-below apply to --method replace")


def test_a_failed_command_leaves_no_empty_directories(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """17. Failed runs left empty output directories behind."""
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"\x00" * 64)
    code, _, _ = run_cli(capsys, "sample", "--checkpoint", str(bogus),
                         "--out", str(tmp_path / "new" / "deep" / "x.png"))
    assert code == 2 and not (tmp_path / "new").exists()
    # The checkpoint is checked before MNIST is looked for (or fetched): no data directory appears.
    code, _, _ = run_cli(capsys, "evaluate", "--checkpoint", str(bogus), "--out-dir", str(tmp_path / "eval"),
                         "--data-root", str(tmp_path / "data"))
    assert code == 2 and not (tmp_path / "eval").exists() and not (tmp_path / "data").exists()


def test_nan_message_does_not_claim_a_checkpoint_that_does_not_exist(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """17. The non-finite-loss message claimed a "last good checkpoint" when none had been written."""
    from mnist_diffusion import train as train_module

    trainer = make_trainer(tmp_path / "run", 6)
    real_loss = train_module.diffusion_loss
    monkeypatch.setattr(train_module, "diffusion_loss", lambda *args: real_loss(*args) * float("nan"))
    with pytest.raises(train_module.TrainingError, match="no checkpoint had been written yet"):
        trainer.run()


def test_train_names_its_directory_only_once_it_owns_it(tmp_path: Path, mnist_root: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """17. `train` printed "training ... into X" before refusing X."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run_cli(capsys, "train", "--run-dir", str(blocker), "--preset", "tiny", "--max-steps", "1",
                           "--data-root", str(mnist_root))
    assert_one_line_error(code, err, "exists and is not a directory")
    assert "training" not in err


def test_a_read_only_home_prints_no_matplotlib_warning(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """17. A read-only HOME printed matplotlib's cache warning."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o500)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env["HOME"] = str(home)
    if os.access(home, os.W_OK):  # root ignores permissions: a HOME that does not exist is unwritable too
        env["HOME"] = str(tmp_path / "missing" / "home")
        (tmp_path / "missing").write_text("a file, so nothing can be created below it")
    try:
        result = subprocess.run([sys.executable, "-m", "mnist_diffusion", "figures", "--checkpoint",
                                 str(tiny_checkpoint), "--out-dir", str(tmp_path / "fig"), "--data-root",
                                 str(tmp_path / "none")], capture_output=True, text=True, env=env, timeout=300)
    finally:
        home.chmod(0o700)
    assert result.returncode == 0, result.stderr
    assert "matplotlib" not in result.stderr.lower(), result.stderr


# -- exit statuses -----------------------------------------------------------------------------

# The CLI in a subprocess, seeing the made-up MNIST files' checksums (the fixture patches them in-process).
CLI_WITH_TEST_DATA = ("import json, os, sys; from mnist_diffusion import data; "
                      "data.SHA256 = json.loads(os.environ['TEST_MNIST_SHA256']); "
                      "from mnist_diffusion.cli import main; sys.exit(main(sys.argv[1:]))")


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path: Path, mnist_root: Path) -> None:
    import signal
    import time

    run_dir = tmp_path / "run"
    command = [sys.executable, "-c", CLI_WITH_TEST_DATA, "train", "--run-dir", str(run_dir), "--preset", "tiny",
               "--max-steps", "100000", "--batch-size", "16", "--timesteps", "20", "--data-root", str(mnist_root),
               "--device", "cpu", "--checkpoint-every", "100000", "--sample-every", "100000"]
    env = os.environ | {"TEST_MNIST_SHA256": json.dumps(data.SHA256)}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as process:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text().strip():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert "stopped on request" in out and "Traceback" not in err
    steps = RunDirectory(run_dir).checkpoints()
    assert steps and f"step_{steps[-1][0]:08d}" in out


@pytest.mark.parametrize(("args", "message"), [
    (["--num", "5", "--digits", "1"], "with digits, per_digit says how many of each: leave num out"),
    (["--last-timestep", "999"], "--last-timestep must be a whole number in [0, 998], got 999"),
    (["--last-timestep", "5000"], "--last-timestep must be a whole number in [0, 998]"),
    (["--sampler", "ddim", "--last-timestep", "100000"], "--last-timestep must be a whole number in [0, 998]"),
    (["--last-timestep", "990"], "--last-timestep 990 ends the walk below the log-SNR floor"),
])
def test_sampling_options_that_once_passed_or_failed_inside_are_named(args: list[str], message: str, tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Round 4: `--num 5 --digits 1` drew 1; `--last-timestep 999` failed with an internal message about
    the log-SNR floor; with ddim, 100000 was accepted."""
    code, _, err = run_cli(capsys, "sample", *args, "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize("command", [
    ["interpolate", "--seeds", "1,2", "--digit", "3", "--frames", "3", "--gif"],
    ["complete", "--images", "{digit}", "--mask", "lower", "--num", "1", "--npz", "{out_npz}"],
])
def test_every_command_writes_its_outputs_together_or_not_at_all(
        tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, command: list[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """The second output of `interpolate --gif` and `complete --npz` fails (a full disk): the first,
    the PNG grid, is not left new either, and no temporary remains."""
    from PIL import Image

    from mnist_diffusion import files

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "digit.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"the previous grid")
    real_write = files.atomic_write

    def second_write_fills_the_disk(path, write):
        if Path(path).suffix in (".gif", ".npz"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write(path, write)

    monkeypatch.setattr(files, "atomic_write", second_write_fills_the_disk)  # save_npz's
    monkeypatch.setattr("mnist_diffusion.figures.atomic_write", second_write_fills_the_disk)  # the PNG's and GIF's
    argv = [part.format(digit=tmp_path / "digit.png", out_npz=tmp_path / "out.npz") for part in command]
    code, stdout, err = run_cli(capsys, *argv, "--checkpoint", str(tiny_checkpoint), "--steps", "2",
                                "--out", str(out))
    assert code == 1 and "No space left on device" in err, err
    assert out.read_bytes() == b"the previous grid" and "wrote" not in stdout
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_batch_larger_than_mnist_is_refused_before_mnist_is_fetched(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path / "run"), "--batch-size", "70000",
                           "--max-steps", "1", "--data-root", str(tmp_path / "new"))
    assert code == 2 and "--batch-size 70000 exceeds MNIST's 60000 training images" in err, err
    assert not (tmp_path / "new").exists() and not (tmp_path / "run").exists()
