"""Completion (inpainting) and interpolation on tiny models and exact denoisers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.completion import (
    COMPLETION_METHODS,
    GUESS_LEVELS,
    complete,
    completion_cost,
    guess_digit,
    guess_timesteps,
    region_mask,
    replace_known,
    sample_repaint,
)
from mnist_diffusion.config import DiffusionConfig, SampleConfig, preset
from mnist_diffusion.interpolation import interpolate_digits, interpolate_seeds, seed_noise, slerp
from mnist_diffusion.pipeline import Pipeline
from mnist_diffusion.sampling import Guidance, generate, make_timesteps
from mnist_diffusion.schedule import NoiseSchedule, timestep_share
from mnist_diffusion.solvers import sample_dpm_solver_pp

from conftest import plain


def tiny(tiny_checkpoint: Path):
    checkpoint = load_checkpoint(tiny_checkpoint)
    return checkpoint.build_model(), NoiseSchedule(checkpoint.diffusion_config)


def lower_half_erased(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(count, 1, 28, 28, generator=generator) * 2 - 1
    keep = region_mask("lower").expand(count, 1, 28, 28).clone()
    return images, keep


@pytest.mark.parametrize(("method", "sampler"), [("repaint", "ddpm"), ("replace", "dpm++2m"), ("replace", "ddim"),
                                                 ("replace", "ddpm")])
def test_known_pixels_come_back_unchanged_and_the_rest_is_drawn(tiny_checkpoint: Path, method: str,
                                                                sampler: str) -> None:
    model, schedule = tiny(tiny_checkpoint)
    images, keep = lower_half_erased(2)
    out = complete(model, schedule, images, keep, plain(guidance=1.5, sampler=sampler, steps=4), num_per_image=3,
                   labels=torch.tensor([3, 7]), method=method, resamples=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (6, 1, 28, 28)
    known = images.repeat_interleave(3, 0)
    mask = keep.repeat_interleave(3, 0)
    assert torch.equal(out[mask], known[mask])
    assert not torch.allclose(out[~mask], known[~mask])
    assert not torch.equal(out[0][~keep[0]], out[1][~keep[0]])  # completions of one input differ


def point_denoiser(schedule: NoiseSchedule, point: float):
    def denoise(x: torch.Tensor, t: torch.Tensor):
        abar = schedule.alphas_cumprod64[t].view(-1, 1, 1, 1)
        x0 = torch.full_like(x, point)
        return x0, ((x.double() - abar.sqrt() * point) / (1 - abar).sqrt()).float()

    return denoise


def test_with_one_point_as_the_data_both_methods_draw_that_point() -> None:
    """If every training image were the constant 0.3, the erased pixels can only be 0.3: RePaint's
    last posterior step and x0-replacement's last DPM-Solver++ step both land on x0_hat."""
    schedule = NoiseSchedule(DiffusionConfig())
    denoise = point_denoiser(schedule, 0.3)
    known = torch.full((4, 1, 6, 6), 0.3)
    keep = torch.zeros(4, 1, 6, 6, dtype=torch.bool)
    keep[:, :, :3] = True
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    timesteps = make_timesteps(1000, 20)
    repainted = sample_repaint(denoise, x, timesteps, schedule, known=known, keep=keep, resamples=3,
                               generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(repainted, known)
    replaced = sample_dpm_solver_pp(replace_known(denoise, schedule, known, keep), x,
                                    make_timesteps(1000, 10, "logsnr", schedule.log_snr), schedule)
    torch.testing.assert_close(replaced, known, atol=1e-5, rtol=0)


def test_region_masks_erase_what_they_name() -> None:
    assert not region_mask("lower")[14:].any() and region_mask("lower")[:14].all()
    assert not region_mask("left")[:, :14].any() and region_mask("left")[:, 14:].all()
    center = region_mask("center")
    assert (~center).sum() == 144 and not center[8:20, 8:20].any()
    with pytest.raises(ValueError, match="unknown mask 'middle'"):
        region_mask("middle")


@pytest.mark.parametrize(("keep", "message"), [
    (torch.ones(2, 1, 28, 28, dtype=torch.bool), "erases nothing"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.bool), "erases everything"),
    (torch.ones(2, 1, 14, 14, dtype=torch.bool), "shaped like the images"),
    (torch.ones(2, 1, 28, 28), "must be a bool tensor"),
])
def test_bad_masks_are_refused(tiny_checkpoint: Path, keep: torch.Tensor, message: str) -> None:
    model, schedule = tiny(tiny_checkpoint)
    with pytest.raises(ValueError, match=message):
        complete(model, schedule, torch.zeros(2, 1, 28, 28), keep)


def test_bad_images_and_methods_are_refused(tiny_checkpoint: Path) -> None:
    model, schedule = tiny(tiny_checkpoint)
    _, keep = lower_half_erased(1)
    with pytest.raises(ValueError, match=r"images must be shaped \(N, 1, 28, 28\)"):
        complete(model, schedule, torch.zeros(1, 1, 32, 32), keep)
    with pytest.raises(ValueError, match="unknown completion method"):
        complete(model, schedule, torch.zeros(1, 1, 28, 28), keep, method="magic")
    assert COMPLETION_METHODS == ("repaint", "replace")


def test_seed_interpolation_ends_on_the_plain_samples_of_each_seed(tiny_checkpoint: Path) -> None:
    """The end frames are the samples of each seed with the same settings, byte for byte (the product's
    defaults included: bf16 where native, the guidance interval, the later end point)."""
    model, schedule = tiny(tiny_checkpoint)
    settings = SampleConfig(guidance=1.5, steps=4)
    frames = interpolate_seeds(model, schedule, (1, 2), 5, settings, digit=7)
    assert frames.shape == (5, 1, 28, 28)
    for frame, seed in ((frames[0], 1), (frames[-1], 2)):
        alone = generate(model, schedule, 1, settings, labels=torch.tensor([7]),
                         generator=torch.Generator().manual_seed(seed))
        assert torch.equal(frame, alone[0])
    assert not torch.allclose(frames[2], frames[0]) and not torch.allclose(frames[2], frames[-1])


def test_pipeline_interpolation_ends_equal_sample_byte_for_byte(tiny_checkpoint: Path) -> None:
    pipe = Pipeline.load(tiny_checkpoint, device="cpu", threads=None)
    walk = pipe.interpolate(seeds=(1, 2), digit=3, frames=4, steps=4)
    assert np.array_equal(walk[0], pipe.sample(1, digit=3, seed=1, steps=4)[0])
    assert np.array_equal(walk[-1], pipe.sample(1, digit=3, seed=2, steps=4)[0])
    walk = pipe.interpolate(digits=(3, 8), frames=4, seed=6, steps=4, guidance_interval="all")
    assert np.array_equal(walk[0], pipe.sample(1, digit=3, seed=6, steps=4, guidance_interval="all")[0])
    assert np.array_equal(walk[-1], pipe.sample(1, digit=8, seed=6, steps=4, guidance_interval="all")[0])


def test_digit_interpolation_ends_on_each_digit(tiny_checkpoint: Path) -> None:
    model, schedule = tiny(tiny_checkpoint)
    settings = SampleConfig(guidance=2.0, steps=3)
    frames = interpolate_digits(model, schedule, (3, 8), 4, settings, seed=5)
    for frame, digit in ((frames[0], 3), (frames[-1], 8)):
        alone = generate(model, schedule, 1, settings, labels=torch.tensor([digit]),
                         generator=torch.Generator().manual_seed(5))
        assert torch.equal(frame, alone[0])
    with pytest.raises(ValueError, match="digit 12 is not one of this model's 10 classes"):
        interpolate_digits(model, schedule, (3, 12), 4)
    with pytest.raises(ValueError, match="deterministic sampler"):
        interpolate_digits(model, schedule, (3, 8), 4, SampleConfig(sampler="ddpm"))
    with pytest.raises(ValueError, match="frames must be between 2 and 64"):
        interpolate_seeds(model, schedule, (1, 2), 1)


def test_slerp_keeps_the_norm_of_equal_norm_vectors() -> None:
    a, b = seed_noise_like(0), seed_noise_like(1)
    b = b * a.norm() / b.norm()
    for weight in (0.0, 0.3, 0.5, 1.0):
        assert slerp(a, b, weight).norm().item() == pytest.approx(a.norm().item(), rel=1e-5)
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)


def seed_noise_like(seed: int) -> torch.Tensor:
    return torch.randn(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_seed_noise_is_what_generate_draws(tiny_checkpoint: Path) -> None:
    model, _ = tiny(tiny_checkpoint)
    assert torch.equal(seed_noise(model, 4), seed_noise_like(4))


# -- the commands ------------------------------------------------------------------------------

def test_complete_command_writes_grid_and_npz_and_keeps_known_pixels(tmp_path: Path, tiny_checkpoint: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    from conftest import run_cli

    digits = np.zeros((2, 28, 28), np.uint8)
    digits[:, 4:24, 12:16] = 255
    np.savez(tmp_path / "in.npz", images=digits)
    code, _, err = run_cli(capsys, "complete", "--checkpoint", str(tiny_checkpoint), "--images",
                             str(tmp_path / "in.npz"), "--mask", "right", "--num", "3", "--digit", "1",
                             "--method", "replace", "--steps", "3", "--out", str(tmp_path / "c.png"),
                             "--npz", str(tmp_path / "c.npz"))
    assert code == 0, err
    with np.load(tmp_path / "c.npz") as saved:
        assert saved["images"].shape == (6, 28, 28) and saved["labels"].tolist() == [1] * 6
        assert (saved["images"][:, :, :14] == digits.repeat(3, 0)[:, :, :14]).all()
    with Image.open(tmp_path / "c.png") as grid:
        assert grid.size == (2 * (5 * 30 + 2), 2 * (2 * 30 + 2))  # digit, erased input, 3 completions
    mask = np.zeros((28, 28), np.uint8)
    mask[20:, :] = 255  # white = erased
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(digits[0]).save(tmp_path / "one.png")
    code, _, err = run_cli(capsys, "complete", "--checkpoint", str(tiny_checkpoint), "--images",
                           str(tmp_path / "one.png"), "--mask", str(tmp_path / "mask.png"), "--num", "1",
                           "--method", "repaint", "--steps", "3", "--out", str(tmp_path / "d.png"),
                           "--npz", str(tmp_path / "d.npz"))
    assert code == 0, err
    with np.load(tmp_path / "d.npz") as saved:
        assert (saved["images"][0, :20] == digits[0, :20]).all()
        assert saved["labels"].shape == (1,)  # the digit it was completed as: the guess


@pytest.mark.parametrize(("setup", "args", "message"), [
    (None, ["--mask", "middle"], "give one of lower, upper, left, right, center"),
    ("big.png", ["--mask", "lower"], "is 32x32 pixels; a digit here is 28x28"),
    ("text.png", ["--mask", "lower"], "is not a readable image"),
    ("white.png", ["--mask", "MASK"], "erases everything"),
    ("black.png", ["--mask", "MASK"], "erases nothing"),
])
def test_complete_command_refuses_bad_images_and_masks(tmp_path: Path, tiny_checkpoint: Path, setup, args,
                                                       message: str, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    from conftest import assert_one_line_error, run_cli

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "big.png")
    (tmp_path / "text.png").write_text("not an image")
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(tmp_path / "white.png")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "black.png")
    images = tmp_path / (setup if setup in ("big.png", "text.png") else "ok.png")
    args = [str(tmp_path / setup) if a == "MASK" else a for a in args]
    code, _, err = run_cli(capsys, "complete", "--checkpoint", str(tiny_checkpoint), "--images", str(images), *args,
                           "--out", str(tmp_path / "x.png"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "x.png").exists()


def test_interpolate_command_writes_a_strip_and_a_gif(tmp_path: Path, tiny_checkpoint: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from conftest import assert_one_line_error, run_cli

    code, _, err = run_cli(capsys, "interpolate", "--checkpoint", str(tiny_checkpoint), "--digit", "7", "--seeds",
                           "1,2", "--frames", "5", "--steps", "3", "--out", str(tmp_path / "s.png"), "--gif")
    assert code == 0, err
    with Image.open(tmp_path / "s.png") as strip:
        assert strip.size == (2 * (5 * 30 + 2), 2 * (30 + 2))
    with Image.open(tmp_path / "s.gif") as gif:
        assert gif.n_frames == 8  # there (5) and back (3)
    code, _, err = run_cli(capsys, "interpolate", "--checkpoint", str(tiny_checkpoint), "--digits", "3,8",
                           "--frames", "3", "--steps", "2", "--out", str(tmp_path / "d.png"))
    assert code == 0, err
    for args, message in ((["--digits", "3,8", "--seeds", "1,2"], "give --seeds A,B"),
                          (["--digits", "3"], "expected two values"),
                          (["--seeds", "1,2", "--sampler", "ddpm"], "invalid choice"),
                          (["--seeds", "1,2", "--frames", "100"], "between 2 and 64")):
        code, _, err = run_cli(capsys, "interpolate", "--checkpoint", str(tiny_checkpoint), *args,
                               "--out", str(tmp_path / "e.png"))
        assert_one_line_error(code, err, message)


@pytest.mark.parametrize("command", ["complete", "interpolate"])
def test_a_digit_the_model_does_not_know_is_refused_before_any_work(tmp_path: Path, command: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    from PIL import Image

    from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
    from mnist_diffusion.config import preset
    from mnist_diffusion.unet import UNet

    from conftest import assert_one_line_error, run_cli

    config = preset("tiny", num_classes=5)
    path = save_checkpoint(Checkpoint(config, DiffusionConfig(num_timesteps=10), UNet(config).state_dict()),
                           tmp_path / "five.safetensors")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "x.png")
    inputs = ["--images", str(tmp_path / "x.png"), "--mask", "lower"] if command == "complete" else ["--seeds", "1,2"]
    code, _, err = run_cli(capsys, command, "--checkpoint", str(path), *inputs, "--digit", "7",
                           "--out", str(tmp_path / "out.png"))
    assert_one_line_error(code, err, "digit 7 is not one of this model's 5 classes (0-4)")
    assert not (tmp_path / "out.png").exists()


class TemplateNetwork(torch.nn.Module):
    """Predicts the noise exactly as if the clean image were `templates[label]`: a network that
    knows ten fixed 'digits' perfectly."""

    def __init__(self, schedule, templates: torch.Tensor) -> None:
        super().__init__()
        self.schedule, self.templates = schedule, templates
        self.config = preset("tiny")

    def forward(self, x, t, labels):
        alpha, sigma = self.schedule.alpha_sigma(t, x)
        return (x - alpha * self.templates[labels]) / sigma


def test_the_guess_is_the_digit_that_explains_the_known_pixels() -> None:
    from mnist_diffusion.completion import guess_digit

    schedule = NoiseSchedule(DiffusionConfig(num_timesteps=1000))
    templates = torch.rand(11, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    network = TemplateNetwork(schedule, templates)
    keep = region_mask("lower").expand(4, 1, 28, 28)
    image = torch.where(keep, templates[[3, 7, 0, 9]], templates[[5, 5, 5, 5]])  # erased parts: another digit
    guesses = guess_digit(network, schedule, image, keep, generator=torch.Generator().manual_seed(1))
    assert guesses.tolist() == [3, 7, 0, 9]


def test_complete_without_a_digit_completes_as_the_guess(tiny_checkpoint: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from conftest import run_cli

    digit = np.zeros((28, 28), np.uint8)
    digit[4:14, 12:16] = 255
    Image.fromarray(digit).save(tmp_path / "d.png")
    common = ["complete", "--checkpoint", str(tiny_checkpoint), "--images", str(tmp_path / "d.png"), "--mask",
              "lower", "--num", "2", "--method", "replace", "--steps", "3"]
    code, _, err = run_cli(capsys, *common, "--out", str(tmp_path / "g.png"), "--npz", str(tmp_path / "g.npz"))
    assert code == 0 and "completed as the digit each input most likely begins:" in err, err
    guessed = int(err.split("most likely begins: ")[1].split()[0])
    with np.load(tmp_path / "g.npz") as saved:
        assert saved["labels"].tolist() == [guessed, guessed]
    code, _, err = run_cli(capsys, *common, "--no-guess", "--out", str(tmp_path / "n.png"),
                           "--npz", str(tmp_path / "n.npz"))
    assert code == 0 and "most likely" not in err
    with np.load(tmp_path / "n.npz") as saved:
        assert "labels" not in saved.files


class CoupledNet(torch.nn.Module):
    """A fake eps-network whose error on the known (upper) half depends on the lower half of x_t: it
    predicts x_t plus (mean of x_t's lower half) x (class - 4.5) / 4.5, so a bright lower half pulls the
    guess to 9 and a dark one to 0. It records what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.config = preset("tiny")
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.clone(), t.clone(), labels.clone()))
        lower = x[:, :, 14:].mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)
        return x + lower * ((labels.float() - 4.5) / 4.5).view(-1, 1, 1, 1)


def test_the_guess_cannot_read_the_erased_pixels() -> None:
    """The same known half with a white or a black erased half is guessed the same, even by a network
    whose error couples the two halves: the erased pixels are set to the background before noising."""
    schedule = NoiseSchedule(DiffusionConfig())
    keep = region_mask("lower").expand(2, 1, 28, 28).clone()
    images = torch.full((2, 1, 28, 28), -1.0)
    images[0, :, 14:] = 1.0  # a white erased half; image 1 has a black one
    guesses = guess_digit(CoupledNet(), schedule, images, keep, generator=torch.Generator().manual_seed(0))
    # Both are read with a black lower half, which pulls to 0; reading the white half would pull image 0 to 9.
    assert guesses.tolist() == [0, 0]
    white, black = CoupledNet(), CoupledNet()
    for net, image in ((white, images[:1]), (black, images[1:])):
        guess_digit(net, schedule, image, keep[:1], generator=torch.Generator().manual_seed(0))
    for (x_white, _, _), (x_black, _, _) in zip(white.calls, black.calls, strict=True):
        assert torch.equal(x_white, x_black)  # on the same noise, the network sees the same input


def test_the_guess_scores_every_class_on_the_same_noise_at_every_level() -> None:
    schedule = NoiseSchedule(DiffusionConfig())
    net = CoupledNet()
    images = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(2)) * 2 - 1
    keep = region_mask("lower").expand(3, 1, 28, 28).clone()
    guess_digit(net, schedule, images, keep, draws=2, generator=torch.Generator().manual_seed(0))
    levels = [int(t[0]) for _, t, _ in net.calls]
    assert levels == [t for t in guess_timesteps(schedule) for _ in range(2)]  # every level, each draw
    assert [round(timestep_share(t, 1000), 2) for t in guess_timesteps(schedule)] == list(GUESS_LEVELS)
    for x, _, labels in net.calls:
        assert labels.tolist() == list(range(10)) * 3
        per_image = x.view(3, 10, -1)
        assert torch.equal(per_image, per_image[:, :1].expand_as(per_image))  # one noise for all ten classes
    assert not torch.equal(net.calls[0][0], net.calls[1][0])  # a fresh draw each time


class LevelRecorder:
    """A denoiser predicting x0 = 0 that records (t, std of its input) at every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, float]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor):
        self.calls.append((int(t[0]), float(x.std())))
        return torch.zeros_like(x), x


def test_repaint_resamples_each_level_after_a_jump_back_and_finishes_once() -> None:
    """Every level but the last runs `resamples` times, each repeat from x_t re-noised from x_s (so its
    input has the spread of level t, not of s); the last level, to the clean image, runs once."""
    schedule = NoiseSchedule(DiffusionConfig())
    timesteps = make_timesteps(1000, 5)
    recorder = LevelRecorder()
    x = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    keep = torch.zeros_like(x, dtype=torch.bool)
    sample_repaint(recorder, x, timesteps, schedule, known=torch.zeros_like(x), keep=keep, resamples=3,
                   generator=torch.Generator().manual_seed(1))
    expected = [t for t in timesteps.tolist()[:-1] for _ in range(3)] + [0]
    assert [t for t, _ in recorder.calls] == expected
    for t, spread in recorder.calls:
        # With x0 = 0 every state at level t is N(0, 1 - abar_t): a repeat without the jump back would
        # start from the spread of the next, cleaner level.
        assert abs(spread - (1 - float(schedule.alphas_cumprod64[t])) ** 0.5) < 0.05, (t, spread)
    assert completion_cost(schedule, SampleConfig(steps=5), Guidance(False, 1.0), "repaint").passes == len(expected)
