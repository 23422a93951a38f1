from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from mnist_diffusion.checkpoint import (
    Checkpoint,
    CheckpointError,
    default_model_path,
    export_model,
    load_checkpoint,
    save_checkpoint,
)
from mnist_diffusion.config import DiffusionConfig, TrainConfig, preset
from mnist_diffusion.unet import UNet


def test_round_trip_rebuilds_the_model_from_the_file_alone(tiny_checkpoint: Path) -> None:
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint.model_config == preset("tiny")
    assert checkpoint.diffusion_config == DiffusionConfig(num_timesteps=50)
    rebuilt = checkpoint.build_model()
    torch.manual_seed(0)
    original = UNet(preset("tiny"))
    torch.nn.init.normal_(original.out[-1].weight, std=0.05)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 30])
    labels = torch.tensor([1, 10])
    torch.testing.assert_close(rebuilt(x, t, labels), original.eval()(x, t, labels), rtol=0, atol=0)


def test_training_state_round_trips(tmp_path: Path) -> None:
    model = UNet(preset("tiny"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 28, 28), torch.tensor([1, 2]), torch.tensor([0, 1])).square().mean().backward()
    optimizer.step()
    ema = {k: v + 1 for k, v in model.state_dict().items()}
    saved = Checkpoint(preset("tiny"), DiffusionConfig(), model.state_dict(), ema, optimizer.state_dict(),
                       train_config=TrainConfig(batch_size=7), step=12, images_seen=84, extra={"elapsed_s": 1.5})
    loaded = load_checkpoint(save_checkpoint(saved, tmp_path / "c.safetensors"))
    assert (loaded.step, loaded.images_seen, loaded.extra) == (12, 84, {"elapsed_s": 1.5})
    assert loaded.train_config == TrainConfig(batch_size=7)
    assert all(torch.equal(loaded.ema_state[k], ema[k]) for k in ema)
    fresh = torch.optim.AdamW(UNet(preset("tiny")).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded.optimizer_state)
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][key], value)


def test_export_keeps_only_the_ema_weights(tmp_path: Path) -> None:
    model = UNet(preset("tiny"))
    ema = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    full = Checkpoint(preset("tiny"), DiffusionConfig(), model.state_dict(), ema, step=3)
    slim = load_checkpoint(export_model(full, tmp_path / "m.safetensors"))
    assert slim.ema_state is None and slim.optimizer_state is None and slim.step == 3
    assert all(torch.equal(slim.model_state[k], ema[k]) for k in ema)


def test_a_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(path)
    assert not marker.exists()


def test_foreign_safetensors_file_says_what_it_is(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an mnist-diffusion checkpoint"):
        load_checkpoint(path)


def test_incompatible_format_version_is_named(tmp_path: Path) -> None:
    path = tmp_path / "future.safetensors"
    meta = {"format": "mnist-diffusion", "format_version": 99}
    save_file({"model.w": torch.zeros(1)}, str(path), metadata={"json": json.dumps(meta)})
    with pytest.raises(CheckpointError, match=r"format version 99.*reads version 1"):
        load_checkpoint(path)


def test_missing_file_and_directory_are_clear(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_shipped_model_loads_and_is_small() -> None:
    path = default_model_path()
    assert path.exists(), "the package must ship its default model"
    assert path.stat().st_size < 25e6
    checkpoint = load_checkpoint()
    assert checkpoint.model_config.conditional
    assert checkpoint.model_config.image_size == 28


def test_a_checkpoint_from_before_lr_decay_and_min_snr_resumes_with_its_own_recipe(tmp_path: Path) -> None:
    """Format-1 files written before the cosine decay and min-SNR weighting existed trained with a
    constant rate and plain MSE; loading them must not switch a resumed run to the new defaults."""
    from safetensors import safe_open

    model = UNet(preset("tiny"))
    path = save_checkpoint(Checkpoint(preset("tiny"), DiffusionConfig(), model.state_dict(),
                                      train_config=TrainConfig(batch_size=7)), tmp_path / "new.safetensors")
    with safe_open(str(path), "pt") as handle:
        meta = json.loads(handle.metadata()["json"])
    tensors = load_file(path)
    del meta["train_config"]["lr_decay"], meta["train_config"]["min_snr_gamma"]
    save_file(tensors, tmp_path / "old.safetensors", {"json": json.dumps(meta)})
    loaded = load_checkpoint(tmp_path / "old.safetensors").train_config
    assert loaded == TrainConfig(batch_size=7, lr_decay="none", min_snr_gamma=0.0)
    assert load_checkpoint(path).train_config == TrainConfig(batch_size=7)
