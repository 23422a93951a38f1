from __future__ import annotations

import pytest
import torch

from mnist_diffusion.config import ModelConfig, preset
from mnist_diffusion.unet import UNet, Upsample2x, count_parameters, timestep_embedding


@pytest.mark.parametrize("image_size", [28, 32])
@pytest.mark.parametrize("num_classes", [0, 10])
def test_output_has_input_shape(image_size: int, num_classes: int) -> None:
    model = UNet(preset("tiny", image_size=image_size, num_classes=num_classes))
    x = torch.randn(3, 1, image_size, image_size)
    labels = torch.tensor([0, 5, 10]) if num_classes else None
    assert model(x, torch.tensor([0, 10, 49]), labels).shape == x.shape


def test_label_changes_the_output() -> None:
    torch.manual_seed(0)
    model = UNet(preset("tiny"))
    with torch.no_grad():  # undo the zero-init of residual branches, which hides the embedding at first
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    x, t = torch.randn(1, 1, 28, 28).repeat(2, 1, 1, 1), torch.tensor([5, 5])
    out = model(x, t, torch.tensor([3, 7]))
    assert not torch.allclose(out[0], out[1])


def test_timestep_embedding_is_sinusoidal() -> None:
    emb = timestep_embedding(torch.tensor([0, 7]), 8)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-torch.log(torch.tensor(10_000.0)) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1, :4], torch.cos(7 * freqs))


def test_presets_have_the_documented_scale() -> None:
    assert 1.0e6 < count_parameters(UNet(preset("small"))) < 1.3e6
    assert 2.3e6 < count_parameters(UNet(preset("seed-002"))) < 2.8e6  # the classic recipe's ~2.3M
    assert preset("unet-256").base_channels * max(preset("unet-256").channel_mults) == 256


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"image_size": 30, "channel_mults": (1, 2, 2)}, "divisible"), ({"dropout": 1.5}, "dropout"),
     ({"base_channels": 12}, "norm_groups")],
)
def test_bad_model_config_is_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_preset_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="choose from tiny, small"):
        preset("huge")


def test_upsampling_equals_nearest_neighbour_interpolation() -> None:
    x = torch.randn(2, 3, 7, 5)
    torch.testing.assert_close(Upsample2x()(x), torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"),
                               rtol=0, atol=0)
