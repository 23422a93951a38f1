"""Shared fixtures: tiny models, tiny checkpoints and tiny IDX files, all made on the spot."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_diffusion import data
from mnist_diffusion.checkpoint import Checkpoint, save_checkpoint
from mnist_diffusion.cli import main
from mnist_diffusion.config import DiffusionConfig, ModelConfig, SampleConfig, preset
from mnist_diffusion.unet import UNet


def plain(**overrides) -> SampleConfig:
    """Sampling settings that walk as the paper writes it: fp32, guided on every step, down to t = 0,
    with `overrides`. Tests of a sampler's arithmetic use these, so that the product's defaults
    (bf16 where native, a guidance interval, a later end point) stay out of the formula."""
    return SampleConfig(**{"guidance": 1.0, "guidance_interval": "all", "precision": "fp32", "last_timestep": 0,
                           **overrides})


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array in the IDX format (magic 0x0000 08 ndim, big-endian dims)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` 28x28 'digits': a bright bar whose position encodes the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count).astype(np.uint8)
    images = np.zeros((count, 28, 28), np.uint8)
    for i, label in enumerate(labels):
        images[i, 4:24, 2 + 2 * label:4 + 2 * label] = 255
    return images, labels


@pytest.fixture(autouse=True)
def threads_as_the_test_sets_them(monkeypatch: pytest.MonkeyPatch):
    """No test draws with a thread count that follows the machine's load (`devices.revisit_threads`): a
    command or a `Pipeline.load` under test may ask for "auto", but the count it chose stays for the
    test, so results never depend on what else the machine is doing. The count is put back after."""
    from mnist_diffusion import devices

    monkeypatch.setattr(devices, "_auto", None)
    monkeypatch.setattr(devices, "_watch_load", lambda cores: None)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def mnist_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root holding tiny IDX files in MNIST/raw, with their checksums made the known ones."""
    raw = data.raw_dir(tmp_path / "data")
    raw.mkdir(parents=True)
    checksums = {}
    for split, count in (("train", 256), ("test", 64)):
        images, labels = fake_mnist(count, seed=len(split))
        image_name, label_name = data.SPLIT_FILES[split]
        for name, array in ((image_name, images), (label_name, labels)):
            payload = idx_bytes(array)
            (raw / name).write_bytes(payload)
            checksums[name] = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(data, "SHA256", checksums)
    return tmp_path / "data"


@pytest.fixture
def tiny_config() -> ModelConfig:
    return preset("tiny")


@pytest.fixture
def tiny_diffusion() -> DiffusionConfig:
    return DiffusionConfig(num_timesteps=50)


@pytest.fixture
def tiny_checkpoint(tmp_path: Path, tiny_config: ModelConfig, tiny_diffusion: DiffusionConfig) -> Path:
    torch.manual_seed(0)
    model = UNet(tiny_config)
    # Non-zero output layer so that samples depend on the weights.
    torch.nn.init.normal_(model.out[-1].weight, std=0.05)
    return save_checkpoint(Checkpoint(tiny_config, tiny_diffusion, model.state_dict()), tmp_path / "tiny.safetensors")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse's own exits (usage errors, --help)
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mnist-diffusion") and "error" in lines[0]
    assert pattern in lines[0], lines[0]


class SteppingClock:
    """A clock that moves `tick` seconds each time it is read, whatever the machine's speed."""

    def __init__(self, tick: float, start: float = 0.0) -> None:
        self.now, self.tick = start, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now
