"""Decoding the files a user hands in: a PNG of one digit, a PNG mask, an `.npz` of digits.

Nothing is decoded or unpacked before its header has been checked: a PNG must say 28x28 before
its pixels are read (so a decompression bomb is refused at its header), and every array of an
`.npz` must declare a plain dtype and a shape within the limits before its bytes are inflated
(so a zip bomb or a header claiming 10^11 images costs nothing). Every refusal is an
`InputFileError` naming the option and the file.
"""

from __future__ import annotations

import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .data import IMAGE_SIZE
from .files import InputFileError, regular_file

MAX_PNG_BYTES = 1 << 20  # a 28x28 PNG is a few hundred bytes; even with metadata, 1 MB is plenty
DIGIT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE)


def read_digit_png(path: str | Path, what: str) -> torch.Tensor:
    """A 28x28 PNG (any mode, converted to greyscale) -> uint8 `(28, 28)`; the size is checked from
    the header before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError

    path = regular_file(path, what)
    if path.stat().st_size > MAX_PNG_BYTES:
        raise InputFileError(f"{what} {path} is {path.stat().st_size:,} bytes; a 28x28 digit PNG is far smaller "
                             f"(at most {MAX_PNG_BYTES:,})")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as picture:  # reads the header only
                if picture.size != DIGIT_SHAPE:
                    raise InputFileError(f"{what} {path} is {picture.size[0]}x{picture.size[1]} pixels; a digit "
                                         f"here is 28x28")
                grey = picture.convert("L")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputFileError(f"{what} {path} says it is an image of hundreds of millions of pixels; a digit "
                                 f"here is 28x28") from None
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as error:
            if isinstance(error, InputFileError):
                raise
            raise InputFileError(f"{what} {path} is not a readable image ({type(error).__name__})") from None
    return torch.from_numpy(np.asarray(grey, dtype=np.uint8).copy())


def _npy_header(stream) -> tuple[tuple[int, ...], np.dtype, bool]:
    """`(shape, dtype, fortran_order)` from the header of a `.npy` stream, leaving it at the data."""
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return shape, dtype, fortran_order


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, check) -> np.ndarray:
    """One array of the archive: its header read and passed to `check(shape, dtype)` (which raises
    to refuse it) before the data is inflated; then exactly the bytes the header promises."""
    with archive.open(member) as stream:
        shape, dtype, fortran_order = _npy_header(stream)
        if dtype.hasobject:
            raise ValueError("it holds Python objects, which are never unpickled")
        if any(type(d) is not int or d < 0 for d in shape):
            raise ValueError(f"its header gives the shape {shape}, with a negative dimension")
        check(shape, dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize > member.file_size:  # the header promises more than the archive holds
            raise ValueError(f"its header promises {count * dtype.itemsize:,} bytes, the archive holds "
                             f"{member.file_size:,}")
        data = stream.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise ValueError("its data is shorter than its header says")
        if stream.read(1):  # at the end, zipfile checks the member's CRC (BadZipFile if damaged)
            raise ValueError("its data is longer than its header says")
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def _read_arrays(path: Path, what: str, checks: dict, first_as_images: bool = False) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` named in `checks` (`images` required), each header passed to its check
    before anything is inflated (`_read_member`); any damage is one `InputFileError` naming the file.
    `first_as_images`: the first array stands for `images` when there is none."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if "images" not in members and first_as_images and members:
                members["images"] = next(iter(members.values()))
            if "images" not in members:
                raise InputFileError(f"{what} {path} holds no 'images' array")
            return {name: _read_member(archive, members[name], check) for name, check in checks.items()
                    if name in members}
    except InputFileError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError, RuntimeError, zlib.error) as error:
        detail = str(error) if isinstance(error, ValueError) else type(error).__name__
        raise InputFileError(f"{what} {path} is not a readable .npz archive of arrays (written by numpy.savez): "
                             f"{detail}") from None


def read_npz_digits(path: str | Path, what: str, *, max_images: int, allow_channel_axis: bool = False,
                    first_array_as_images: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """uint8 images `(N, 28, 28)` with N <= `max_images` and, when the archive has `labels`,
    int64 labels `(N,)`, from an `.npz` written by `numpy.savez`. The images are the `images` array
    (or, with `first_array_as_images`, the first array when there is none); `allow_channel_axis`
    also takes `(N, 1, 28, 28)`. Labels' values and count are the caller's to check."""
    path = regular_file(path, what)

    def check_images(shape: tuple[int, ...], dtype: np.dtype) -> None:
        digit_shape = shape[2:] if allow_channel_axis and len(shape) == 4 and shape[1] == 1 else shape[1:]
        if dtype != np.uint8 or len(shape) < 2 or tuple(digit_shape) != DIGIT_SHAPE:
            raise InputFileError(f"{what} {path}: expected uint8 images shaped (N, 28, 28), got {dtype} "
                                 f"{tuple(shape)}")
        if shape[0] > max_images:
            raise InputFileError(f"{what} {path} holds {shape[0]:,} images; at most {max_images:,} are allowed")

    def check_labels(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.kind not in "iu":
            raise InputFileError(f"{what} {path}: labels must be integers 0-9, got {dtype} values")
        if len(shape) != 1 or shape[0] > max_images:
            raise InputFileError(f"{what} {path}: labels must be one digit per image, shaped (N,), got "
                                 f"{tuple(shape)}")

    arrays = _read_arrays(path, what, {"images": check_images, "labels": check_labels},
                          first_as_images=first_array_as_images)
    images, labels = arrays["images"].reshape(-1, *DIGIT_SHAPE), arrays.get("labels")
    return (torch.from_numpy(images.copy()),
            torch.from_numpy(labels.astype(np.int64)) if labels is not None else None)


MAX_SOURCE_SIDE = 1024  # pixels a side of an image in a training .npz (`datasets.prepare`)
MAX_CLASS_NAME = 64


def read_source_npz(path: str | Path, max_images: int) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """A training `.npz`: uint8 `images` `(N, H, W)`, optional integer `labels` `(N,)` and optional text
    `class_names` `(K,)`; every header checked (signs, sizes, the product) before anything is inflated."""
    path = regular_file(path, "--data")

    def check_images(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype != np.uint8 or len(shape) != 3 or min(shape) < 1 or max(shape[1:]) > MAX_SOURCE_SIDE:
            raise InputFileError(f"--data {path}: 'images' must be uint8 shaped (N, H, W), at most "
                                 f"{MAX_SOURCE_SIDE} a side, got {dtype} {tuple(shape)}")
        if shape[0] > max_images:
            raise InputFileError(f"--data {path} holds {shape[0]:,} images; at most {max_images:,} are prepared")

    def check_labels(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.kind not in "iu" or len(shape) != 1 or not 0 <= shape[0] <= max_images:
            raise InputFileError(f"--data {path}: 'labels' must be integers shaped (N,), got {dtype} {tuple(shape)}")

    def check_names(shape: tuple[int, ...], dtype: np.dtype) -> None:
        if dtype.kind != "U" or len(shape) != 1 or not 1 <= shape[0] <= 1000 or dtype.itemsize > 4 * MAX_CLASS_NAME:
            raise InputFileError(f"--data {path}: 'class_names' must be text shaped (K,), at most {MAX_CLASS_NAME} "
                                 f"characters each, got {dtype} {tuple(shape)}")

    arrays = _read_arrays(path, "--data", {"images": check_images, "labels": check_labels,
                                           "class_names": check_names})
    images, labels, names = arrays["images"], arrays.get("labels"), arrays.get("class_names")
    if labels is not None and (len(labels) != len(images) or labels.min() < 0):
        raise InputFileError(f"--data {path}: 'labels' must give one class (>= 0) to each of the "
                             f"{len(images):,} images")
    if names is not None and (labels is None or len(names) <= int(labels.max()) or len(set(names)) != len(names)):
        raise InputFileError(f"--data {path}: 'class_names' must name every label once, with 'labels' beside it")
    return images, labels, [str(name) for name in names] if names is not None else None


def read_completion_inputs(path: str | Path, max_images: int) -> torch.Tensor:
    """uint8 digits `(N, 28, 28)` for `complete --images`: a PNG of one digit or an `.npz` with `images`."""
    suffix = Path(path).suffix.lower()
    if suffix == ".png":
        return read_digit_png(path, "--images")[None]
    if suffix != ".npz":
        raise InputFileError(f"--images {path}: expected a .png of one digit or an .npz with 'images'")
    images = read_npz_digits(path, "--images", max_images=max_images)[0]
    if len(images) == 0:
        raise InputFileError(f"--images {path} holds no images")
    return images


def read_mask(text: str) -> torch.Tensor:
    """The keep-mask `(28, 28)`, True = known: a region name (`MASK_REGIONS`), or a PNG whose white
    (> 127) pixels are the part to draw."""
    from .completion import MASK_REGIONS, region_mask

    if text in MASK_REGIONS:
        return region_mask(text)
    if not text.lower().endswith(".png"):
        raise InputFileError(f"--mask {text!r}: give one of {', '.join(MASK_REGIONS)} or a 28x28 PNG (white = "
                             f"erased)")
    keep = read_digit_png(text, "--mask") <= 127
    if keep.all() or not keep.any():
        raise InputFileError(f"--mask {text} erases {'nothing' if keep.all() else 'everything'}; white pixels mark "
                             f"the part to draw")
    return keep
