"""Training on your own images: every source (a folder, an .npz, Fashion-MNIST/KMNIST IDX files), every
refusal before a run, the class names travelling with the model, polarity, and the held-out split.
All on made-up images; no network and no MNIST."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from mnist_diffusion import datasets
from mnist_diffusion.checkpoint import load_checkpoint
from mnist_diffusion.data import DataError, to_uint8
from mnist_diffusion.pipeline import Pipeline

from conftest import assert_one_line_error, idx_bytes, run_cli

SHAPES = ("bar", "cross", "ring")


def shape_image(name: str, size: int, width: int, seed: int) -> Image.Image:
    """Dark ink on white paper: a bar, a cross or a ring, jittered."""
    rng = np.random.default_rng(seed)
    picture = Image.new("RGB", (width, size), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    cx, cy, r, line = width / 2 + rng.normal(0, 1), size / 2 + rng.normal(0, 1), size * 0.3, max(2, size // 9)
    if name == "bar":
        draw.line([(cx, cy - r), (cx, cy + r)], fill=(0, 0, 0), width=line)
    elif name == "ring":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(0, 0, 0), width=line)
    else:
        draw.line([(cx - r, cy - r), (cx + r, cy + r)], fill=(0, 0, 0), width=line)
        draw.line([(cx - r, cy + r), (cx + r, cy - r)], fill=(0, 0, 0), width=line)
    return picture


def in_mode(picture: Image.Image, mode: str) -> Image.Image:
    """The picture saved as PNG mode `mode`; LA keeps the ink in the alpha channel over transparency."""
    if mode == "LA":
        ink = Image.fromarray(255 - np.asarray(picture.convert("L")))
        return Image.merge("LA", (Image.new("L", picture.size, 0), ink))
    return picture.convert(mode)


def make_folder(root: Path, per_class: int = 8) -> Path:
    """Class sub-folders of PNGs in modes L, RGB, LA and P, of several sizes and extension cases."""
    for name in SHAPES:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            size = 28 + 7 * (i % 4)
            picture = in_mode(shape_image(name, size, size + 3 * (i % 3), seed=i), ("L", "RGB", "LA", "P")[i % 4])
            picture.save(root / name / f"{i:03d}{('.png', '.PNG', '.Png')[i % 3]}", format="PNG")
    (root / "ring" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "shapes")


def test_a_folder_is_prepared_as_bright_ink_on_black_with_its_classes(folder: Path) -> None:
    prepared = datasets.prepare(str(folder))
    assert prepared.images.shape == (24, 28, 28) and prepared.images.dtype == np.uint8
    assert prepared.class_names == SHAPES and prepared.labels.tolist() == [k for k in range(3) for _ in range(8)]
    assert prepared.dark_ink  # light paper found at the borders, and inverted
    edges = np.concatenate([prepared.images[:, 0], prepared.images[:, -1]], axis=1)
    assert edges.mean() < 10 and prepared.images[:, 10:18, 10:18].mean() > 40  # black paper, bright ink
    # An alpha-only drawing (LA) comes out as the same kind of picture as an opaque one.
    assert abs(float(prepared.images[2].mean()) - float(prepared.images[1].mean())) < 15
    assert prepared.manifest["ignored_files"] == 1 and len(prepared.manifest["files"]) == 24
    kept = datasets.prepare(str(folder), invert="no")
    assert not kept.dark_ink and np.median(kept.images[:, 0]) == 255  # as given: white paper (alpha over black)


def test_the_held_out_split_is_fixed_by_content(folder: Path) -> None:
    first, again = datasets.prepare(str(folder)), datasets.prepare(str(folder))
    assert np.array_equal(first.held_out, again.held_out)
    for entry, held in zip(first.manifest["files"], first.held_out, strict=True):
        assert held == datasets.held_out_by_content(entry["sha256"]) or not held
    images, labels = first.split()
    assert len(images) == (~first.held_out).sum() and set(labels.tolist()) == {0, 1, 2}  # every class trains


def test_a_corrupt_image_is_refused_by_name_before_any_training(folder: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "bar" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "ring" / "empty.jpg").write_bytes(b"")
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", str(folder), "--run-dir", str(run), "--max-steps", "1",
                           "--preset", "tiny", "--batch-size", "4")
    last = err.strip().splitlines()[-1]
    assert code == 2 and "Traceback" not in err and "broken.png cannot be used: not a readable image" in last
    assert "(and 1 more)" in last and not (run / "checkpoints").exists()
    code, _, err = run_cli(capsys, "train", "--data", str(folder), "--run-dir", str(run), "--max-steps", "1",
                           "--preset", "tiny", "--batch-size", "4", "--skip-bad-images")
    assert code == 0, err
    assert "skipped 2 images that cannot be used" in err


@pytest.mark.parametrize(("damage", "message"), [
    (lambda root: (root / "empty").mkdir(), "class folder"),
    (lambda root: Image.new("L", (28, 28)).save(root / "loose.png"), "both images"),
])
def test_layouts_that_cannot_train_are_one_line(folder: Path, damage, message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    damage(folder)
    code, _, err = run_cli(capsys, "train", "--data", str(folder), "--run-dir", str(tmp_path / "run"),
                           "--max-steps", "1")
    assert_one_line_error(code, err, message)


def test_a_single_image_and_too_many_classes_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    single = tmp_path / "single"
    single.mkdir()
    shape_image("bar", 28, 28, 0).save(single / "one.png")
    with pytest.raises(DataError, match="1 usable image"):
        datasets.prepare(str(single))
    monkeypatch.setattr(datasets, "MAX_CLASSES", 2)
    with pytest.raises(DataError, match="3 class folders; a model here takes at most 2"):
        datasets.prepare(str(make_folder(tmp_path / "many", per_class=1)))


def test_few_images_per_class_warn_that_they_are_memorised(folder: Path) -> None:
    said: list[str] = []
    datasets.prepare(str(folder), log=said.append)
    assert any("memorised" in line for line in said)


def test_class_names_and_polarity_travel_with_the_model(folder: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", str(folder), "--run-dir", str(run), "--max-steps", "2",
                           "--preset", "tiny", "--batch-size", "4", "--timesteps", "20")
    assert code == 0, err
    checkpoint = sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]
    config = load_checkpoint(checkpoint).model_config
    assert config.class_names == SHAPES and config.num_classes == 3 and config.dark_ink
    pipe = Pipeline.load(checkpoint, device="cpu", threads=None)
    drawn = pipe.sample(classes=["ring"], per_class=20, steps=2)
    assert drawn.shape == (20, 28, 28)
    assert np.array_equal(pipe.sample(classes=[2], per_class=20, steps=2), drawn)  # by name or by index
    # The model works in bright ink on black; what it gives back is in the data's polarity, dark on white.
    model_space = pipe.generate(20, torch.full((20,), 2), pipe.settings(steps=2), torch.Generator().manual_seed(0))
    assert np.array_equal(drawn, 255 - to_uint8(model_space).numpy())
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(checkpoint), "--class", "cross", "--num", "3",
                           "--steps", "2", "--out", str(tmp_path / "x.png"), "--npz", str(tmp_path / "x.npz"))
    assert code == 0, err
    with np.load(tmp_path / "x.npz") as saved:
        assert saved["labels"].tolist() == [1, 1, 1]
    grids = []
    for labelled in ([], ["--label-rows"]):
        code, _, err = run_cli(capsys, "sample", "--checkpoint", str(checkpoint), "--classes", "ring,bar",
                               "--per-class", "2", "--steps", "2", *labelled, "--out", str(tmp_path / "g.png"))
        assert code == 0, err
        with Image.open(tmp_path / "g.png") as grid:
            grids.append(np.asarray(grid))
    plain, named = grids
    margin = named[:, :named.shape[1] - plain.shape[1]]
    assert margin.shape[1] > 0 and margin.max() > 200  # a margin naming each row, in light text
    assert np.array_equal(named[:, margin.shape[1]:], plain)
    code, _, err = run_cli(capsys, "sample", "--checkpoint", str(checkpoint), "--class", "square",
                           "--out", str(tmp_path / "y.png"))
    assert_one_line_error(code, err, "'square' is not a class of this model (bar, cross, ring)")


def test_resuming_from_a_changed_folder_says_so_and_keeps_the_runs_data(folder: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    base = ["train", "--data", str(folder), "--run-dir", str(run), "--preset", "tiny", "--batch-size", "4",
            "--timesteps", "20"]
    assert run_cli(capsys, *base, "--max-steps", "1")[0] == 0
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    assert {"source", "options", "class_names", "files", "dark_ink"} <= set(manifest)
    shape_image("bar", 40, 40, 99).save(folder / "bar" / "new.png")
    code, _, err = run_cli(capsys, *base, "--max-steps", "2")
    assert code == 0, err
    assert "changed since this run prepared it (1 added)" in err
    assert json.loads((run / "data" / "manifest.json").read_text()) == manifest


def test_an_npz_source_gives_images_labels_and_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, (30, 20, 24), dtype=np.uint8)
    images[:, 8:12, 6:18] = 250
    np.savez(tmp_path / "set.npz", images=images, labels=np.arange(30) % 3,
             class_names=np.array(["a", "b", "c"]))
    prepared = datasets.prepare(str(tmp_path / "set.npz"))
    assert prepared.images.shape == (30, 28, 28) and prepared.class_names == ("a", "b", "c")
    assert not prepared.dark_ink
    np.savez(tmp_path / "bad.npz", images=images, class_names=np.array(["a"]))
    with pytest.raises(Exception, match="'class_names' must name every label"):
        datasets.prepare(str(tmp_path / "bad.npz"))


def fake_idx_dataset(root: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The four files of `name` as .gz in its torchvision folder, their md5s made the published ones."""
    dataset = datasets.IDX_DATASETS[name]
    raw = root / dataset.folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    md5 = {}
    for split, count in (("train", 60_000), ("t10k", 10_000)):
        arrays = {f"{split}-images-idx3-ubyte": rng.integers(0, 255, (count, 28, 28), dtype=np.uint8),
                  f"{split}-labels-idx1-ubyte": (np.arange(count) % 10).astype(np.uint8)}
        for file, array in arrays.items():
            payload = gzip.compress(idx_bytes(array), compresslevel=1)
            (raw / (file + ".gz")).write_bytes(payload)
            md5[file] = hashlib.md5(payload).hexdigest()
    monkeypatch.setitem(datasets.IDX_DATASETS, name, datasets.IdxDataset(dataset.folder, "http://127.0.0.1:9/",
                                                                        md5, dataset.class_names))
    return md5


def test_fashion_mnist_files_are_checked_against_their_checksums(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake_idx_dataset(tmp_path, "fashion-mnist", monkeypatch)
    prepared = datasets.prepare("fashion-mnist", data_root=tmp_path)
    assert prepared.images.shape == (70_000, 28, 28) and prepared.held_out.sum() == 10_000
    assert prepared.class_names[0] == "T-shirt/top"
    damaged = tmp_path / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="not the published fashion-mnist file"):
        datasets.prepare("fashion-mnist", data_root=tmp_path)


def test_missing_kmnist_files_say_which_and_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "train", "--data", "kmnist", "--data-root", str(tmp_path), "--run-dir",
                           str(tmp_path / "run"), "--max-steps", "1")
    assert_one_line_error(code, err, "kmnist: train-images-idx3-ubyte.gz")
    assert str(tmp_path / "KMNIST" / "raw") in err


def test_a_classifier_of_the_folders_classes_scores_against_its_held_out_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_folder(tmp_path / "shapes", per_class=40)  # about 12 held out: enough for 5 nearest neighbours
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", str(folder), "--run-dir", str(run), "--max-steps", "1", "--preset",
                   "tiny", "--batch-size", "4", "--timesteps", "20")[0] == 0
    code, out, err = run_cli(capsys, "train-classifier", "--data", str(folder), "--epochs", "1",
                             "--out", str(tmp_path / "c.safetensors"))
    assert code == 0, err
    assert "held-out accuracy" in out
    checkpoint = sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", str(checkpoint), "--num", "20", "--steps", "2",
                           "--out-dir", str(tmp_path / "eval"))
    assert_one_line_error(code, err, "needs a classifier of its classes")
    code, out, err = run_cli(capsys, "evaluate", "--checkpoint", str(checkpoint), "--classifier",
                             str(tmp_path / "c.safetensors"), "--num", "20", "--steps", "2",
                             "--out-dir", str(tmp_path / "eval"))
    assert code == 0, err
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    names = [row["name"] for row in report["rows"]]
    assert "shapes held out (copy reference)" in names and any(n.startswith("shapes train") for n in names)
    assert "held-out images of shapes" in report["settings"]["reference"]
