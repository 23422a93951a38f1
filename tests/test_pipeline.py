"""The Python face: `Pipeline` draws, completes and interpolates with the command line's defaults,
and the same seed gives the same digits as the command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_diffusion import Pipeline, SampleConfig, save_grid
from mnist_diffusion.checkpoint import load_checkpoint, save_checkpoint
from mnist_diffusion.cli import build_parser
from mnist_diffusion.config import FEW_STEPS, student_settings
from mnist_diffusion.demo import Demo
from mnist_diffusion.flags import sample_settings

from conftest import run_cli


@pytest.fixture
def pipe(tiny_checkpoint: Path) -> Pipeline:
    return Pipeline.load(tiny_checkpoint, device="cpu")


@pytest.fixture
def student_checkpoint(tmp_path: Path, tiny_checkpoint: Path) -> Path:
    """The tiny model marked as a student distilled to 3 passes (`ModelConfig.student_steps`)."""
    tiny = load_checkpoint(tiny_checkpoint)
    student = dataclasses.replace(tiny, model_config=dataclasses.replace(tiny.model_config, student_steps=3))
    return save_checkpoint(student, tmp_path / "student.safetensors")


def test_one_set_of_defaults_for_the_api_the_command_line_and_the_page(tmp_path: Path,
                                                                      student_checkpoint: Path) -> None:
    """A model's defaults are the product's (`SampleConfig()`), or a distilled student's own walk; the
    Python API, each drawing command's unset flags and the page all take them from there, and a flag
    given replaces its own field only."""
    commands = {"sample": [], "evaluate": [], "complete": ["--images", "x.png", "--mask", "lower"],
                "interpolate": ["--digits", "3,8"]}
    for checkpoint, defaults in ((None, SampleConfig()), (str(student_checkpoint), student_settings(3))):
        pipe = Pipeline.load(checkpoint, device="cpu")
        assert pipe.defaults == defaults
        for command, required in commands.items():
            args = build_parser().parse_args([command, *required])
            assert args.sample_fields, command
            assert sample_settings(args, pipe) == defaults, command
            args = build_parser().parse_args([command, *required, "--steps", "6"])
            assert sample_settings(args, pipe) == dataclasses.replace(defaults, steps=6), command
        page = Demo.load(checkpoint, tmp_path).info()["defaults"]
        assert (page["sampler"], page["steps"], page["guidance"]) == (defaults.sampler, defaults.steps or FEW_STEPS,
                                                                      defaults.guidance)


def test_sample_gives_the_command_lines_digits(pipe: Pipeline, tiny_checkpoint: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--digits", "0-9", "--per-digit",
                           "2", "--seed", "7", "--out", str(tmp_path / "g.png"), "--npz", str(tmp_path / "g.npz"))
    assert code == 0, err
    digits = pipe.sample(digits=range(10), per_digit=2, seed=7)
    assert digits.dtype == np.uint8 and digits.shape == (20, 28, 28)
    with np.load(tmp_path / "g.npz") as saved:
        assert np.array_equal(saved["images"], digits)
        assert saved["labels"].tolist() == [d for d in range(10) for _ in range(2)]
    assert not np.array_equal(digits, pipe.sample(digits=range(10), per_digit=2, seed=8))


def test_a_stochastic_tail_reaches_the_sampler_from_the_command_line_and_python(
        pipe: Pipeline, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--noise-below` and `noise_below=` give the same digits; fresh noise on only some steps draws
    other digits than on every step, and none at all is the ODE's walk."""
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(tiny_checkpoint), "--num", "6", "--seed", "2",
                           "--sampler", "dpm++2m-sde", "--noise-below", "0.5", "--guidance", "1",
                           "--out", str(tmp_path / "s.png"), "--npz", str(tmp_path / "s.npz"))
    assert code == 0, err
    tail = pipe.sample(6, seed=2, sampler="dpm++2m-sde", noise_below=0.5, guidance=1.0)
    with np.load(tmp_path / "s.npz") as saved:
        assert np.array_equal(saved["images"], tail)
    assert not np.array_equal(tail, pipe.sample(6, seed=2, sampler="dpm++2m-sde", guidance=1.0))
    settings = pipe.settings(guidance=1.0, precision="fp32")
    labels = torch.arange(6)
    ode = pipe.generate(6, labels, dataclasses.replace(settings, sampler="dpm++2m"), torch.Generator().manual_seed(2))
    quiet = pipe.generate(6, labels, dataclasses.replace(settings, sampler="dpm++2m-sde", noise_below=1e-9),
                          torch.Generator().manual_seed(2))
    torch.testing.assert_close(quiet, ode, atol=1e-5, rtol=1e-5)


def test_complete_and_interpolate_give_the_command_lines_pictures(pipe: Pipeline, tiny_checkpoint: Path,
                                                                  tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    digit = np.zeros((28, 28), np.uint8)
    digit[4:14, 12:16] = 255
    Image.fromarray(digit).save(tmp_path / "d.png")
    code, _, err = run_cli(capsys, "complete", "--checkpoint", str(tiny_checkpoint),
                           "--images", str(tmp_path / "d.png"), "--mask", "lower", "--num", "3",
                           "--method", "replace", "--seed", "4",
                           "--out", str(tmp_path / "c.png"), "--npz", str(tmp_path / "c.npz"))
    assert code == 0, err
    completed = pipe.complete(digit, "lower", num_per_image=3, method="replace", seed=4)
    with np.load(tmp_path / "c.npz") as saved:
        assert np.array_equal(saved["images"], completed)
    assert np.array_equal(completed[:, :14], np.broadcast_to(digit[:14], (3, 14, 28)))  # the kept half stays
    code, _, err = run_cli(capsys, "interpolate", "--checkpoint", str(tiny_checkpoint), "--digits", "3,8",
                           "--frames", "4", "--out", str(tmp_path / "i.png"))
    assert code == 0, err
    frames = pipe.interpolate(digits=(3, 8), frames=4)
    save_grid(frames, tmp_path / "api.png", nrow=4)
    assert (tmp_path / "api.png").read_bytes() == (tmp_path / "i.png").read_bytes()


def test_bad_requests_are_value_errors_that_say_what_is_allowed(pipe: Pipeline) -> None:
    with pytest.raises(ValueError, match="digit 12 is not one of this model's 10 classes"):
        pipe.sample(digit=12)
    with pytest.raises(ValueError, match="give seeds"):
        pipe.interpolate()
    with pytest.raises(ValueError, match="exceeds the model's 49 timesteps down to t = 1"):  # T = 50, ending at 1
        pipe.sample(4, steps=51)


def test_the_network_batch_has_its_own_name_and_num_is_how_many(pipe: Pipeline) -> None:
    """diffusers' `batch_size` is how many images; here that is `num`, and the network's batch is
    `max_batch`, which changes nothing but memory and speed."""
    steps_seen: list[dict] = []
    drawn = pipe.sample(num=4, max_batch=3, seed=1, steps=3, callback=steps_seen.append)
    assert drawn.shape == (4, 28, 28)
    assert len(steps_seen) == 2 * 3  # two network batches (3 digits, then 1), 3 steps each
    with pytest.raises(TypeError, match="batch_size is ambiguous"):
        pipe.sample(batch_size=4)
    with pytest.raises(TypeError, match="unknown sampling setting"):
        pipe.sample(4, stepz=3)


def test_a_generator_draws_what_its_seed_draws(pipe: Pipeline) -> None:
    by_seed = pipe.sample(3, seed=5, steps=3)
    by_generator = pipe.sample(3, generator=torch.Generator().manual_seed(5), steps=3)
    assert np.array_equal(by_seed, by_generator)
    with pytest.raises(ValueError, match="seed or generator"):
        pipe.sample(3, seed=5, generator=torch.Generator())


def test_pipeline_picks_threads_as_the_command_line_does(tiny_checkpoint: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine with one core taken, `--threads auto` and `Pipeline.load()` both take the idle one."""
    from mnist_diffusion import devices

    before = torch.get_num_threads()
    monkeypatch.setattr(devices, "_last_reading", None)
    monkeypatch.setattr(devices, "busy_cores", lambda: 1.0)
    monkeypatch.setattr(devices.os, "cpu_count", lambda: 2)
    try:
        Pipeline.load(tiny_checkpoint, device="cpu")
        assert torch.get_num_threads() == devices.choose_threads("auto") == 1
        Pipeline.load(tiny_checkpoint, device="cpu", threads=2)
        assert torch.get_num_threads() == 2
        torch.set_num_threads(before)
        Pipeline.load(tiny_checkpoint, device="cpu", threads=None)
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)


def test_to_moves_the_model_and_mps_is_named(pipe: Pipeline) -> None:
    from mnist_diffusion.devices import choose_device

    assert pipe.to("cpu") is pipe and pipe.device == torch.device("cpu")
    assert choose_device("mps", {}, 0, mps_available=True) == torch.device("mps")
    with pytest.raises(ValueError, match="no MPS device"):
        choose_device("mps", {}, 0, mps_available=False)


def test_save_grid_writes_one_png_of_all_digits(tmp_path: Path) -> None:
    digits = np.full((6, 28, 28), 200, np.uint8)
    path = save_grid(digits, tmp_path / "grid.png", nrow=3, scale=1)
    with Image.open(path) as grid:
        assert grid.size == (3 * 30 + 2, 2 * 30 + 2)


def test_an_unconditional_row_is_named_without_a_guidance_weight() -> None:
    from mnist_diffusion.scoring import row_name

    assert row_name(SampleConfig(sampler="ddim"), 8, conditional=False) == "model (ddim, 8 steps, unconditional)"
    assert row_name(SampleConfig(sampler="ddim", guidance=1.25), 8, conditional=True) == \
        "model (ddim, 8 steps, w=1.25 on t/T 0.3-0.7)"


def test_completion_gives_a_model_taught_black_its_known_pixels_at_that_black(
        tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mnist_diffusion import pipeline as pipeline_module

    tiny = load_checkpoint(tiny_checkpoint)
    taught = dataclasses.replace(tiny, model_config=dataclasses.replace(tiny.model_config, black_margin=0.1))
    pipe = Pipeline.load(save_checkpoint(taught, tmp_path / "taught.safetensors"), device="cpu")
    seen = []

    def recording_complete(model, schedule, images, mask, *args, **kwargs):
        seen.append(images)
        return original(model, schedule, images, mask, *args, **kwargs)

    original = pipeline_module.complete
    monkeypatch.setattr(pipeline_module, "complete", recording_complete)
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[4:24, 12:16] = 255  # a stroke on black
    pipe.complete(digit, mask="lower", digit=1, num_per_image=1, steps=2)
    kept = seen[0][0, 0, :14]
    black, ink = kept[torch.from_numpy(digit[:14] == 0)], kept[torch.from_numpy(digit[:14] == 255)]
    assert len(black) and torch.allclose(black, torch.full_like(black, -1.1)) and torch.all(ink == 1.0)
