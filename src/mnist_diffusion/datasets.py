"""Training data beyond MNIST: Fashion-MNIST and KMNIST in their IDX files, a folder of images (one
sub-folder per class), or an `.npz`; prepared once, before any training step, into the uint8 arrays
the trainer reads.

Preparation (`prepare`): every image is decoded and checked; converted to 8-bit grayscale explicitly
(ITU-R 601-2 luma), with any alpha composited onto white paper (black with `invert="no"`, which
declares bright ink on dark paper); padded to a square with its own paper colour (the median of its
border) and area-resized to the model's size. Polarity: the model is taught bright ink on black, as
MNIST is; `invert="auto"` inverts when the images' borders are light (ink on paper), and the model
remembers it (`ModelConfig.dark_ink`) so that its samples come back in the data's own polarity.

A held-out split is fixed by content: an image is held out when the sha256 of its bytes falls in one
tenth of the hash space, so a re-run or a resumed preparation agrees and duplicates stay together
(never one copy trained on and the other scored against). The prepared arrays and a manifest (every
source file's path and sha256, the options, the class names, the split) go to `RUN/data/`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import MAX_CLASSES
from .data import SPLIT_SIZES, DataError, parse_idx
from .files import atomic_write

BUILTIN_SOURCES = ("mnist", "fashion-mnist", "kmnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
INVERT_CHOICES = ("auto", "yes", "no")
MAX_IMAGE_FILE_BYTES = 32 << 20  # a scanned page at 600 dpi is a few MB
MAX_IMAGE_SIDE = 8192  # pixels; PIL's decompression-bomb check stops far larger claims first
MAX_SOURCE_IMAGES = 1_000_000
FEW_PER_CLASS = 300  # below this, a class is small enough to be memorised (the copy check shows it)
HELD_OUT_ONE_IN = 10
DATA_DIR = "data"
PREPARED_FILE, MANIFEST_FILE = "prepared.npz", "manifest.json"


@dataclass(frozen=True)
class IdxDataset:
    """A dataset published as four gzipped IDX files in torchvision's layout, `<root>/<folder>/raw`."""

    folder: str
    url: str
    md5: dict[str, str]  # of the published .gz files
    class_names: tuple[str, ...]


IDX_DATASETS: dict[str, IdxDataset] = {
    "fashion-mnist": IdxDataset(
        "FashionMNIST", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        {"train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310"},
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")),
    "kmnist": IdxDataset(
        "KMNIST", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        {"train-images-idx3-ubyte": "bdb82020997e1d708af4cf47b453dcf7",
         "train-labels-idx1-ubyte": "e144d726b3acfaa3e44228e80efcd344",
         "t10k-images-idx3-ubyte": "5c965bf0a639b31b8f53240b1b52f4d7",
         "t10k-labels-idx1-ubyte": "7320c461ea6c1c855c0b718fb2a4b134"},
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
}


@dataclass
class Prepared:
    """Images ready to train on: uint8 `(N, S, S)` with bright ink on black, int64 labels `(N,)`, the
    class names (empty: one class, an unconditional model), which images are held out, whether the
    source had dark ink, and the manifest that describes it all."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    held_out: np.ndarray
    dark_ink: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, held_out: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The training split (or the held-out one) as the trainer and the evaluator take it."""
        chosen = self.held_out == held_out
        return torch.from_numpy(self.images[chosen].copy()), torch.from_numpy(self.labels[chosen].copy())


def is_builtin(source: str) -> bool:
    return source in BUILTIN_SOURCES


def held_out_by_content(digest: str) -> bool:
    """Whether an image whose bytes hash to `digest` (sha256 hex) is held out: one in ten, by content."""
    return int(digest[:8], 16) % HELD_OUT_ONE_IN == 0


# -- decoding one image -------------------------------------------------------------------------------

class BadImage(ValueError):
    """One source image that cannot be used; the message says why."""


def decode_image(payload: bytes, size: int, alpha_background: int) -> np.ndarray:
    """Image file bytes -> uint8 `(size, size)` grayscale: alpha composited onto `alpha_background`,
    padded to a square with the image's paper colour (its border's median), area-resized."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(payload)) as picture:  # the header only, so far
                if max(picture.size) > MAX_IMAGE_SIDE:
                    raise BadImage(f"{picture.size[0]}x{picture.size[1]} pixels, more than {MAX_IMAGE_SIDE} a side")
                picture.seek(0)  # an animation's first frame
                grey = _to_grey(picture, alpha_background)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise BadImage("it claims hundreds of millions of pixels (a decompression bomb)") from None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as error:
            if isinstance(error, BadImage):
                raise
            raise BadImage(f"not a readable image ({type(error).__name__})") from None
    return _square_and_resize(grey, size)


def _to_grey(picture, alpha_background: int) -> np.ndarray:
    """Any PIL mode -> uint8 `(H, W)`: alpha over a flat background, 16-bit scaled, colour as luma."""
    from PIL import Image

    if picture.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(picture, dtype=np.float64)
        top = 65535.0 if picture.mode.startswith("I;16") else max(float(array.max()), 1.0)
        return np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
    if picture.mode in ("RGBA", "LA", "PA") or (picture.mode == "P" and "transparency" in picture.info):
        rgba = picture.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (alpha_background,) * 3 + (255,))
        return np.asarray(Image.alpha_composite(paper, rgba).convert("L"), dtype=np.uint8)
    if picture.mode not in ("L", "RGB"):
        picture = picture.convert("RGB")
    return np.asarray(picture.convert("L"), dtype=np.uint8)


def border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])


def _square_and_resize(grey: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    height, width = grey.shape
    side = max(height, width)
    paper = int(np.median(border(grey)))
    square = np.full((side, side), paper, dtype=np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = grey
    if side == size:
        return square
    return np.asarray(Image.fromarray(square).resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


# -- sources -------------------------------------------------------------------------------------------

@dataclass
class _Decoded:
    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)


def _folder_classes(root: Path) -> tuple[list[tuple[str, list[Path]]], int]:
    """`[(class name, image files)]` of a folder (one class per sub-folder, or one unnamed class for a
    flat folder) and how many other files it holds; `DataError` for a layout that cannot train."""
    entries = sorted((entry for entry in root.iterdir() if not entry.name.startswith(".")), key=lambda e: e.name)
    folders = [entry for entry in entries if entry.is_dir()]
    flat_images = [entry for entry in entries if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES]
    if folders and flat_images:
        raise DataError(f"{root} holds both images ({flat_images[0].name}, ...) and class sub-folders "
                        f"({folders[0].name}, ...): put every image in its class's folder, or use a flat folder "
                        f"of images for a model without classes")
    if not folders:
        ignored = len([e for e in entries if e not in flat_images])
        return [("", flat_images)], ignored
    if len(folders) > MAX_CLASSES:
        raise DataError(f"{root} has {len(folders):,} class folders; a model here takes at most {MAX_CLASSES:,}")
    classes, ignored = [], len([e for e in entries if not e.is_dir()])
    for folder in folders:
        inside = sorted((e for e in folder.iterdir() if not e.name.startswith(".")), key=lambda e: e.name)
        images = [e for e in inside if e.is_file() and e.suffix.lower() in IMAGE_SUFFIXES]
        if not images:
            raise DataError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}, any case)")
        ignored += len(inside) - len(images)
        classes.append((folder.name, images))
    return classes, ignored


def _read_folder(root: Path, size: int, alpha_background: int, log: Callable[[str], None]) -> tuple[_Decoded, dict]:
    classes, ignored = _folder_classes(root)
    total = sum(len(files) for _, files in classes)
    if total > MAX_SOURCE_IMAGES:
        raise DataError(f"{root} holds {total:,} images; at most {MAX_SOURCE_IMAGES:,} are prepared")
    log(f"preparing {total:,} images in {len(classes)} class{'es' if len(classes) > 1 else ''} from {root}"
        + (f" ({ignored} other files ignored)" if ignored else ""))
    decoded = _Decoded()
    for label, (_, files) in enumerate(classes):
        for path in files:
            relative = str(path.relative_to(root))
            try:
                if path.stat().st_size > MAX_IMAGE_FILE_BYTES:
                    raise BadImage(f"{path.stat().st_size:,} bytes, more than {MAX_IMAGE_FILE_BYTES:,}")
                payload = path.read_bytes()
                decoded.images.append(decode_image(payload, size, alpha_background))
            except (BadImage, OSError) as error:
                decoded.bad.append((relative, str(error) if isinstance(error, BadImage) else error.strerror or ""))
                continue
            decoded.labels.append(label)
            decoded.files.append({"path": relative, "sha256": hashlib.sha256(payload).hexdigest()})
    names = [name for name, _ in classes]  # one class (a flat folder, or one sub-folder): no classes to choose
    return decoded, {"kind": "folder", "class_names": names if len(names) > 1 else [], "ignored_files": ignored}


def _read_npz(path: Path, size: int) -> tuple[_Decoded, dict]:
    from .inputs import read_source_npz

    images, labels, names = read_source_npz(path, MAX_SOURCE_IMAGES)
    decoded = _Decoded()
    for index, image in enumerate(images):
        decoded.images.append(_square_and_resize(image, size))
        decoded.labels.append(int(labels[index]) if labels is not None else 0)
        decoded.files.append({"path": f"{path.name}#{index}", "sha256": hashlib.sha256(image.tobytes()).hexdigest()})
    if labels is None:
        names = []
    elif names is None:
        names = [str(k) for k in range(int(labels.max()) + 1)]
    return decoded, {"kind": "npz", "class_names": list(names)}


def load_idx_dataset(name: str, root: str | Path, *, log: Callable[[str], None] = lambda line: None,
                     timeout: float = 5.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST or KMNIST: `(train images, train labels, test images, test labels)` from
    `<root>/<folder>/raw`, each `.gz` checked against its published md5 (fetched from the official host
    when missing and reachable); a plain IDX file without its `.gz` is checked by shape."""
    dataset = IDX_DATASETS[name]
    directory = Path(root) / dataset.folder / "raw"
    arrays, missing = {}, []
    for file, md5 in dataset.md5.items():
        plain, packed = directory / file, directory / (file + ".gz")
        if not packed.is_file() and not plain.is_file() and _fetch(dataset.url + file + ".gz", packed, md5, timeout):
            log(f"downloaded {file}.gz from {dataset.url}")
        if packed.is_file():
            payload = packed.read_bytes()
            if hashlib.md5(payload, usedforsecurity=False).hexdigest() != md5:
                raise DataError(f"{packed} is not the published {name} file (its md5 differs); delete it and retry")
            arrays[file] = parse_idx(gzip.decompress(payload))
        elif plain.is_file():
            arrays[file] = parse_idx(plain.read_bytes())
        else:
            missing.append(file + ".gz")
    if missing:
        raise DataError(f"{name}: {', '.join(missing)} missing and {dataset.url} unreachable; put the four published "
                        f"files (from {dataset.url}) in {directory} and retry")
    train_images, train_labels = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    test_images, test_labels = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    for images, labels, split, count in ((train_images, train_labels, "train", SPLIT_SIZES["train"]),
                                         (test_images, test_labels, "t10k", SPLIT_SIZES["test"])):
        if images.shape != (count, 28, 28) or labels.shape != (count,) or labels.max() >= len(dataset.class_names):
            raise DataError(f"{directory}: the {split} files are not {name}'s ({count:,} 28x28 images with labels "
                            f"0-{len(dataset.class_names) - 1}); delete them and retry")
    return train_images, train_labels.astype(np.int64), test_images, test_labels.astype(np.int64)


def _fetch(url: str, target: Path, md5: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (OSError, ValueError):
        return False
    if hashlib.md5(payload, usedforsecurity=False).hexdigest() != md5:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, lambda tmp: tmp.write_bytes(payload))
    return True


# -- preparation ----------------------------------------------------------------------------------------

def prepare(source: str, *, data_root: str | Path = "data", size: int = 28, invert: str = "auto",
            skip_bad: bool = False, log: Callable[[str], None] = lambda line: None) -> Prepared:
    """The images of `source` (a built-in name, a folder or an `.npz`), prepared as the module says.
    `DataError` names the first thing that cannot be trained on, before any training step."""
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}, got {invert!r}")
    if is_builtin(source):
        return _prepare_builtin(source, data_root, log)
    path = Path(source)
    options = {"size": size, "invert": invert, "skip_bad_images": skip_bad}
    if path.is_dir():
        decoded, described = _read_folder(path, size, 0 if invert == "no" else 255, log)
    elif path.is_file() and path.suffix.lower() == ".npz":
        decoded, described = _read_npz(path, size)
    else:
        raise DataError(f"--data {source}: not {', '.join(BUILTIN_SOURCES)}, a folder of images or an .npz file")
    if decoded.bad and not skip_bad:
        first, reason = decoded.bad[0]
        more = f" (and {len(decoded.bad) - 1} more)" if len(decoded.bad) > 1 else ""
        raise DataError(f"{Path(source) / first} cannot be used: {reason}{more}; nothing was trained "
                        f"(--skip-bad-images trains without them)")
    if decoded.bad:
        log(f"skipped {len(decoded.bad)} image{'s' if len(decoded.bad) > 1 else ''} that cannot be used "
            f"(first: {decoded.bad[0][0]}: {decoded.bad[0][1]})")
    if len(decoded.images) < 2:
        raise DataError(f"--data {source} holds {len(decoded.images)} usable image(s); a model needs many more")
    images = np.stack(decoded.images)
    dark_ink = invert == "yes" or (invert == "auto" and _light_paper(images))
    prepared = Prepared(255 - images if dark_ink else images, np.array(decoded.labels, dtype=np.int64),
                        tuple(described["class_names"]), _held_out(decoded), dark_ink)
    _warn_if_small(prepared, log)
    prepared.manifest = {"source": str(source), **described, "options": options, "dark_ink": dark_ink,
                         "files": [f | {"held_out": bool(h)} for f, h in zip(decoded.files, prepared.held_out,
                                                                            strict=True)],
                         "skipped": [{"path": p, "reason": r} for p, r in decoded.bad]}
    return prepared


def _prepare_builtin(source: str, data_root: str | Path, log: Callable[[str], None]) -> Prepared:
    if source == "mnist":
        from .data import load_mnist

        train, test = load_mnist(data_root, "train"), load_mnist(data_root, "test")
        parts, names = (train[0].numpy(), train[1].numpy(), test[0].numpy(), test[1].numpy()), ()
    else:
        parts, names = load_idx_dataset(source, data_root, log=log), IDX_DATASETS[source].class_names
    images, labels = np.concatenate([parts[0], parts[2]]), np.concatenate([parts[1], parts[3]])
    held_out = np.arange(len(images)) >= len(parts[0])  # the published test split
    return Prepared(images, labels, names, held_out, False, {"source": source, "kind": "idx",
                                                             "class_names": list(names)})


def _light_paper(images: np.ndarray) -> bool:
    """Whether the images are ink on light paper: the median of their borders' medians is light."""
    return float(np.median([np.median(border(image)) for image in images])) > 127


def _held_out(decoded: _Decoded) -> np.ndarray:
    """Held out by content (`held_out_by_content`), except that every class keeps one training image."""
    held_out = np.array([held_out_by_content(f["sha256"]) for f in decoded.files])
    labels = np.array(decoded.labels)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if held_out[members].all():
            held_out[members[0]] = False
    return held_out


def _warn_if_small(prepared: Prepared, log: Callable[[str], None]) -> None:
    counts = np.bincount(prepared.labels[~prepared.held_out], minlength=max(prepared.num_classes, 1))
    if counts.min() < FEW_PER_CLASS:
        names = prepared.class_names or ("(all images)",)
        few = names[int(counts.argmin())]
        log(f"warning: class {few} has only {int(counts.min())} training images: a small set is memorised rather "
            f"than learned (`evaluate` counts near copies of training images)")


# -- the run directory's copy ---------------------------------------------------------------------------

def store(prepared: Prepared, run_dir: str | Path) -> None:
    """`RUN/data/prepared.npz` and `RUN/data/manifest.json`, each written atomically."""
    directory = Path(run_dir) / DATA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"images": prepared.images, "labels": prepared.labels, "held_out": prepared.held_out,
              "class_names": np.array(prepared.class_names, dtype=str)}

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(directory / PREPARED_FILE, save)  # np.savez: uncompressed, so a resume reads it back fast
    atomic_write(directory / MANIFEST_FILE, lambda tmp: tmp.write_text(json.dumps(prepared.manifest, indent=1)))


def load_stored(run_dir: str | Path) -> Prepared | None:
    """The prepared data a run stored (None: it trained on MNIST)."""
    directory = Path(run_dir) / DATA_DIR
    if not (directory / PREPARED_FILE).is_file():
        return None
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    with np.load(directory / PREPARED_FILE, allow_pickle=False) as saved:
        return Prepared(saved["images"], saved["labels"], tuple(str(n) for n in saved["class_names"]),
                        saved["held_out"], bool(manifest.get("dark_ink", False)), manifest)


def changes(stored: dict[str, Any], fresh: dict[str, Any]) -> str | None:
    """What differs between a run's manifest and a fresh preparation's, in words (None: nothing)."""
    before = {f["path"]: f["sha256"] for f in stored.get("files", [])}
    after = {f["path"]: f["sha256"] for f in fresh.get("files", [])}
    added, removed = len(after.keys() - before.keys()), len(before.keys() - after.keys())
    changed = sum(before[p] != after[p] for p in before.keys() & after.keys())
    said = [f"{n} {what}" for n, what in ((added, "added"), (removed, "removed"), (changed, "changed")) if n]
    if stored.get("options") != fresh.get("options"):
        said.append(f"options {stored.get('options')} -> {fresh.get('options')}")
    if stored.get("class_names") != fresh.get("class_names"):
        said.append("other classes")
    return ", ".join(said) or None


def training_data(source: str, run_dir: str | Path, *, data_root: str | Path = "data", invert: str = "auto",
                  skip_bad: bool = False, log: Callable[[str], None] = lambda line: None) -> Prepared:
    """What `train --data SOURCE` trains on: `source` prepared afresh; when the run already stored the
    data it began with, that data (resumed bit for bit), saying so if the source has changed since."""
    fresh = prepare(source, data_root=data_root, invert=invert, skip_bad=skip_bad, log=log)
    stored = load_stored(run_dir)
    if stored is None:
        return fresh
    changed = changes(stored.manifest, fresh.manifest)
    if changed:
        log(f"{source} changed since this run prepared it ({changed}): resuming on the data the run began with, "
            f"kept in {Path(run_dir) / DATA_DIR}")
    return stored
