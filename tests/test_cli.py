from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_diffusion.config import SampleConfig

from conftest import assert_one_line_error, run_cli

COMMANDS = ("download", "train", "sample", "complete", "interpolate", "figures", "train-classifier", "evaluate",
            "export", "serve")


def test_help_lists_every_command_and_each_has_its_own(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    listed = re.findall(r"^ {4}(\S+)", out, flags=re.MULTILINE)  # one command per line, 4 spaces in
    assert tuple(listed) == COMMANDS
    for name in COMMANDS:
        code, out, _ = run_cli(capsys, name, "--help")
        assert code == 0 and f"usage: mnist-diffusion {name}" in out


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "mnist_diffusion", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("mnist-diffusion ")


def test_sample_writes_grid_and_npz(tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, npz = tmp_path / "grid.png", tmp_path / "s.npz"
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--digits", "0-2",
                                "--per-digit", "4", "--steps", "3", "--out", str(out), "--npz", str(npz))
    assert code == 0, err
    with np.load(npz) as saved:
        assert saved["images"].shape == (12, 28, 28) and saved["images"].dtype == np.uint8
        assert saved["labels"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    with Image.open(out) as grid:
        size = grid.size
    assert size == (2 * (4 * 30 + 2), 2 * (3 * 30 + 2))  # 4 columns, 3 rows, 2 px gaps, scaled x2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "--num", "0"], "must be between 1 and"),
        (["sample", "--digit", "11"], "digit 11 is not one of this model's 10 classes (0-9)"),
        (["sample", "--digits", "9-2"], "runs backwards"),
        (["sample", "--sampler", "euler-magic"], "invalid choice"),
        (["sample", "--guidance", "-1"], "--guidance must be in [0, 20]"),
        (["sample", "--steps", "0"], "--steps must be a whole number in [1, "),
        (["sample", "--batch-size", "0"], "--max-batch must be a whole number in [1, 4096]"),
        (["sample", "--checkpoint", "missing.safetensors"], "does not exist"),
        (["sample", "--out", "grid.jpg"], "ending in .png"),
        (["sample", "--digit", "3", "--digits", "0-9"], "not allowed with"),
        (["train", "--run-dir", "r", "--preset", "gigantic", "--max-steps", "1"], "invalid choice"),
        (["train", "--run-dir", "r"], "say how long to train"),
        (["train", "--run-dir", "r", "--batch-size", "0", "--max-steps", "1"],
         "train: batch size must be at least 1, got 0"),
        (["train", "--run-dir", "r", "--resume", "--max-steps", "1"], "no checkpoint to resume"),
        (["train", "--run-dir", "r", "--max-steps", "1", "--timestep-sampling", "beta"], "invalid choice"),
        (["train", "--run-dir", "r", "--max-steps", "1", "--lognormal-std", "0"],
         "needs a finite mean and a positive std"),
        (["train", "--run-dir", "r", "--max-steps", "1", "--black-margin", "0.6"],
         "--black-margin: must be a finite number >= 0 and <= 0.5"),
        (["export", "--checkpoint", "nope.safetensors", "--out", "m.safetensors"], "does not exist"),
        (["figures", "--run-dir", "nowhere"], "no metrics.jsonl"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, message)


def test_unwritable_output_is_refused_before_sampling(tmp_path: Path, tiny_checkpoint: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a file instead
            target = tmp_path / "afile"
            target.write_text("")
            out = target / "grid.png"
        else:
            out = locked / "grid.png"
        code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--out", str(out))
    finally:
        locked.chmod(0o700)
    assert_one_line_error(code, err, "directory")


def test_digit_on_an_unconditional_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
    from mnist_diffusion.config import DiffusionConfig, preset
    from mnist_diffusion.unet import UNet

    config = preset("tiny", num_classes=0)
    path = save_checkpoint(Checkpoint(config, DiffusionConfig(num_timesteps=10), UNet(config).state_dict()),
                           tmp_path / "u.safetensors")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(path), "--digit", "3",
                           "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "unconditional")


def test_foreign_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"\x00" * 100)
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(bogus), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "not a safetensors file")


def test_train_then_sample_then_figures_end_to_end(tmp_path: Path, mnist_root: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--run-dir", str(run_dir), "--preset", "tiny", "--max-steps", "4",
                             "--batch-size", "32", "--timesteps", "20", "--data-root", str(mnist_root),
                             "--device", "cpu")
    assert code == 0, err
    assert "done: step 4" in out
    checkpoint = run_dir / "checkpoints" / "step_00000004.safetensors"
    exported = tmp_path / "model.safetensors"
    assert run_cli(capsys, "export", "--checkpoint", str(checkpoint), "--out", str(exported))[0] == 0
    code, out, err = run_cli(capsys, "figures", "--checkpoint", str(exported), "--out-dir", str(tmp_path / "fig"),
                             "--run-dir", str(run_dir), "--data-root", str(mnist_root))
    assert code == 0, err
    for name in ("forward_process.png", "reverse_process.png", "sampling.gif", "loss_curve.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000, name
    assert f"drawing with {exported} (step 4)" in err
    # Re-running on the same directory resumes and says so.
    code, out, err = run_cli(capsys, "train", "--run-dir", str(run_dir), "--preset", "tiny", "--max-steps", "6",
                             "--batch-size", "32", "--timesteps", "20", "--data-root", str(mnist_root))
    assert code == 0 and "resuming" in err and "done: step 6" in out
    # Without --checkpoint, figures draws with the run's own newest checkpoint, not the shipped model.
    code, out, err = run_cli(capsys, "figures", "--out-dir", str(tmp_path / "fig2"), "--run-dir", str(run_dir),
                             "--data-root", str(mnist_root))
    assert code == 0, err
    assert f"drawing with {run_dir / 'checkpoints' / 'step_00000006.safetensors'} (step 6)" in err
    assert "figures: 100% (40/40 steps" in err  # 20 DDPM steps for the reverse process, 20 for the GIF


def test_train_black_margin_travels_in_the_model(tmp_path: Path, mnist_root: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_diffusion.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--run-dir", str(run_dir), "--preset", "tiny", "--max-steps", "2",
                           "--batch-size", "8", "--black-margin", "0.1", "--data-root", str(mnist_root))
    assert code == 0, err
    checkpoint = run_dir / "checkpoints" / "step_00000002.safetensors"
    assert load_checkpoint(checkpoint).model_config.black_margin == 0.1
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(checkpoint), "--num", "2", "--steps", "2",
                           "--out", str(tmp_path / "s.png"))
    assert code == 0, err


def test_train_records_the_timestep_law_it_was_asked_for(tmp_path: Path, mnist_root: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--run-dir", str(run_dir), "--preset", "tiny", "--max-steps", "2",
                           "--batch-size", "8", "--timestep-sampling", "lognormal", "--lognormal-mean", "-0.5",
                           "--lognormal-std", "1.5", "--data-root", str(mnist_root), "--device", "cpu")
    assert code == 0, err
    from mnist_diffusion.checkpoint import load_checkpoint

    stored = load_checkpoint(run_dir / "checkpoints" / "step_00000002.safetensors").train_config
    assert (stored.timestep_sampling, stored.lognormal_mean, stored.lognormal_std) == ("lognormal", -0.5, 1.5)


def test_checkpoint_for_another_image_size_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
    from mnist_diffusion.config import DiffusionConfig, preset
    from mnist_diffusion.unet import UNet

    config = preset("tiny", image_size=64)
    path = save_checkpoint(Checkpoint(config, DiffusionConfig(num_timesteps=10), UNet(config).state_dict()),
                           tmp_path / "big.safetensors")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(path), "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "64px")


def test_padded_32px_model_samples_28px_digits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
    from mnist_diffusion.config import DiffusionConfig, preset
    from mnist_diffusion.unet import UNet

    config = preset("tiny", image_size=32)
    path = save_checkpoint(Checkpoint(config, DiffusionConfig(num_timesteps=10), UNet(config).state_dict()),
                           tmp_path / "padded.safetensors")
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(path), "--num", "3", "--steps", "2",
                           "--out", str(tmp_path / "x.png"), "--npz", str(tmp_path / "x.npz"))
    assert code == 0, err
    with np.load(tmp_path / "x.npz") as saved:
        assert saved["images"].shape == (3, 28, 28)


def test_evaluate_rejects_bad_sample_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    code, _, err = run_cli(capsys, "evaluate", "--samples", str(tmp_path / "none.npz"), "--out-dir", str(tmp_path))
    assert_one_line_error(code, err, "does not exist")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((4, 32, 32), np.float32))
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(wrong), "--out-dir", str(tmp_path))
    assert_one_line_error(code, err, "expected uint8 images shaped (N, 28, 28)")
    code, _, err = run_cli(capsys, "evaluate", "--samples", str(wrong), "--checkpoint", "x.safetensors",
                           "--out-dir", str(tmp_path))
    assert_one_line_error(code, err, "not both")


def test_evaluate_end_to_end_writes_the_report(tmp_path: Path, tiny_checkpoint: Path, mnist_root: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    import json

    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(tiny_checkpoint), "--num", "30", "--steps", "2",
                             "--data-root", str(mnist_root), "--out-dir", str(tmp_path / "eval"))
    assert code == 0, err
    assert "MNIST train 256 (floor)" in out and "uniform noise" in out  # all 256 training digits of the fixture
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert names[0].startswith(f"model ({SampleConfig.sampler}, 2 steps") and len(names) == 4
    model_row = report["rows"][0]
    assert model_row["count"] == 30 and model_row["conditional_accuracy"] is not None
    assert sum(model_row["histogram"]) == pytest.approx(1.0, abs=1e-3)
    assert (tmp_path / "eval" / "report.md").exists() and (tmp_path / "eval" / "nearest_neighbours.png").exists()
    assert report["settings"]["precision"] in ("fp32", "bf16")


def test_precision_is_chosen_by_flag_and_recorded(tmp_path: Path, tiny_checkpoint: Path, mnist_root: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import numpy as np

    images = {}
    for precision in ("fp32", "bf16"):
        code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "20", "--steps", "3",
                               "--precision", precision, "--out", str(tmp_path / f"{precision}.png"),
                               "--npz", str(tmp_path / f"{precision}.npz"))
        assert code == 0, err
        with np.load(tmp_path / f"{precision}.npz") as saved:
            images[precision] = saved["images"].astype(int)
    difference = np.abs(images["fp32"] - images["bf16"])
    assert difference.max() > 0  # the flag reached the network
    assert difference.mean() < 4  # ... and the digits are the same digits (mean off by < 4 of 255)
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", str(tiny_checkpoint), "--num", "20", "--steps", "2",
                           "--precision", "bf16", "--data-root", str(mnist_root), "--out-dir", str(tmp_path / "eval"))
    assert code == 0, err
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["settings"]["precision"] == "bf16"
    code, _, err = run_cli(capsys, "sample", "--precision", "fp16", "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, "invalid choice")


def test_sample_draws_the_digits_its_seed_names(tmp_path: Path, tiny_checkpoint: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """One generator, seeded by --seed, first shuffles the even mix of digits and then draws the noise:
    the CLI's digits are exactly the library's for that recipe (a seed keeps naming the same digits)."""
    import torch

    from mnist_diffusion.checkpoint import load_checkpoint
    from mnist_diffusion.data import to_uint8
    from mnist_diffusion.sampling import generate
    from mnist_diffusion.schedule import NoiseSchedule

    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "12", "--seed", "3",
                           "--steps", "3", "--out", str(tmp_path / "x.png"), "--npz", str(tmp_path / "x.npz"))
    assert code == 0, err
    # T = 50 here: of the 3 steps (t/T 1, 0.5, 0) the default interval 0.3-0.7 guides one.
    assert "12 digits: 3 steps, 2 branches on 1 of them (guidance interval) = 4 network passes per digit" in err
    checkpoint = load_checkpoint(tiny_checkpoint)
    generator = torch.Generator().manual_seed(3)
    labels = (torch.arange(12) % 10)[torch.randperm(12, generator=generator)]
    expected = to_uint8(generate(checkpoint.build_model(), NoiseSchedule(checkpoint.diffusion_config), 12,
                                 SampleConfig(steps=3), labels=labels, generator=generator))
    with np.load(tmp_path / "x.npz") as saved:
        assert np.array_equal(saved["labels"], labels.numpy())
        assert np.array_equal(saved["images"], expected.numpy())


def test_a_huge_grid_is_capped_and_says_so(tmp_path: Path, tiny_checkpoint: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """--digits 0-9 --per-digit 1000 used to write a 60,004 x 604 PNG; the grid now shows at most 32
    per row and the .npz keeps every digit."""
    code, out, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--digits", "0-1",
                             "--per-digit", "40", "--steps", "1", "--out", str(tmp_path / "x.png"),
                             "--npz", str(tmp_path / "x.npz"))
    assert code == 0, err
    assert "the grid shows 64 of them; all are in the .npz" in out
    with Image.open(tmp_path / "x.png") as grid:
        assert grid.size == (2 * (32 * 30 + 2), 2 * (2 * 30 + 2))
    with np.load(tmp_path / "x.npz") as saved:
        assert saved["images"].shape == (80, 28, 28)


def test_evaluate_names_a_guidance_interval_in_its_row(tmp_path: Path, tiny_checkpoint: Path, mnist_root: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(tiny_checkpoint), "--num", "20", "--steps", "4",
                             "--guidance-interval", "0.1,0.7", "--no-references", "--data-root", str(mnist_root),
                             "--out-dir", str(tmp_path / "eval"))
    assert code == 0, err
    assert f"model ({SampleConfig.sampler}, 4 steps, w={SampleConfig.guidance:g} on t/T 0.1-0.7)" in out
    assert "20 digits: 4 steps, 2 branches on" in err and "(guidance interval)" in err


@pytest.mark.parametrize(("args", "message"), [
    (["interpolate", "--digits", "3,8", "--eta", "0.5"], "unrecognized arguments: --eta"),
    (["interpolate", "--digits", "3,8", "--batch-size", "4"], "unrecognized arguments: --batch-size"),
    (["interpolate", "--digits", "3,8", "--digit", "5"], "--digit sets the digit of a --seeds walk"),
])
def test_interpolate_refuses_what_it_would_ignore(args: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and message in err, err


def test_complete_help_gives_repaints_steps_and_no_walk_end_it_would_ignore(
        capsys: pytest.CaptureFixture[str]) -> None:
    """RePaint walks to the clean image: complete takes no --last-timestep or --log-snr-floor."""
    _, out, _ = run_cli(capsys, "complete", "--help")
    assert "default: 50 for repaint, each resampled 3 times; replace: 8" in " ".join(out.split())
    assert "--last-timestep" not in out and "--log-snr-floor" not in out
    assert "--guidance-interval" in out and "--precision" in out


@pytest.mark.parametrize("command", ["sample", "complete", "interpolate", "evaluate", "train"])
def test_no_option_can_be_abbreviated(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`train --data mydata` once meant --data-root; every parser now refuses prefixes."""
    prefix = {"sample": "--gui", "complete": "--meth", "interpolate": "--fram", "evaluate": "--no-ref",
              "train": "--max-st"}[command]
    required = {"complete": ["--images", "x.png", "--mask", "lower"], "train": ["--run-dir", "r"]}.get(command, [])
    code, _, err = run_cli(capsys, command, *required, prefix, "1")
    assert code == 2 and "unrecognized arguments" in err and prefix in err, err


def test_guidance_interval_all_guides_every_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--guidance-interval all` once became None, which the pipeline read as "keep the default": the
    cost line said every step was guided and the digits were the default interval's (the shipped
    model, whose guidance visibly changes a digit)."""
    drawn = {}
    for interval in ("all", None):
        chosen = ["--guidance-interval", interval] if interval else []
        npz = tmp_path / f"{interval}.npz"
        code, _, err = run_cli(capsys, "sample", "--digit", "3", "--num", "4", *chosen,
                               "--out", str(tmp_path / "x.png"), "--npz", str(npz))
        assert code == 0, err
        with np.load(npz) as saved:
            drawn[interval] = saved["images"]
        if interval == "all":
            assert "4 digits: 8 steps, 2 branches (guidance) = 16 network passes per digit" in err
        else:
            assert "4 digits: 8 steps, 2 branches on 2 of them (guidance interval) = 10 network passes" in err
    assert not np.array_equal(drawn["all"], drawn[None])


def test_complete_and_train_classifier_say_their_cost_and_progress_outside_a_terminal(
        tmp_path: Path, tiny_checkpoint: Path, mnist_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "d.png")
    code, _, err = run_cli(capsys, "complete", "--checkpoint", str(tiny_checkpoint), "--images",
                           str(tmp_path / "d.png"), "--mask", "lower", "--num", "2", "--steps", "3",
                           "--out", str(tmp_path / "c.png"))
    assert code == 0, err
    # RePaint: 3 levels, the first two resampled 3 times, the last once; guessing scores 10 classes first.
    assert "1 images x 2 completions: RePaint, 3 levels = 7 network passes per completion, after 80 passes per " \
           "image to guess the digit" in err
    assert "complete (repaint): 100% (3/3 steps" in err
    code, _, err = run_cli(capsys, "train-classifier", "--epochs", "1", "--data-root", str(mnist_root),
                           "--out", str(tmp_path / "classifier.safetensors"))
    assert code == 0, err
    assert "training the classifier: 1 epochs of 256 images, 2 steps of 128" in err
    assert "train-classifier: 100% (2/2 steps" in err
    code, _, err = run_cli(capsys, "interpolate", "--checkpoint", str(tiny_checkpoint), "--digits", "3,8",
                           "--frames", "3", "--steps", "2", "--out", str(tmp_path / "i.png"))
    assert code == 0, err
    assert "3 frames, each drawn alone: 2 steps" in err and "interpolate (unipc, 2 steps): 100% (6/6 steps" in err
