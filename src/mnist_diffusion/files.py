"""The one place files are written and user-given files are opened.

Every output of the package (checkpoints, grids, GIFs, `.npz` archives, reports) goes through
`atomic_write`: the bytes go to a temporary file beside the target, are fsynced, and only then
renamed over it, so a kill or a full disk leaves the previous file intact, never half a file.
A failed write raises `OSError` naming the target path, whatever library did the writing.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import secrets
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

NAME_MAX = 255  # bytes in one file name on the common file systems (ext4, xfs, btrfs, tmpfs, APFS)
TEMP_NAME_KEEP = 200  # characters of the target's name kept in its temporary's name


class Terminated(BaseException):
    """SIGTERM arrived (see `raise_terminated`): unwinds like Ctrl-C, so `atomic_write` removes its temporary."""


def raise_terminated(signum: int, frame: object) -> None:
    """The handler of SIGTERM and SIGINT while a command runs: the first signal raises `Terminated`
    (SIGTERM) or `KeyboardInterrupt` (SIGINT); any later one is ignored, so a second Ctrl-C or SIGTERM
    cannot interrupt the clean-up the first one started (removing temporaries, saying why it stopped)."""
    for each in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(each) is raise_terminated:
            signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated


def raise_on_signals() -> Callable[[], None]:
    """Install `raise_terminated` for SIGTERM and SIGINT (a SIGINT the parent ignores, as for a
    background job, stays ignored); return the function that puts the previous handlers back."""
    watched = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        watched.append(signal.SIGINT)
    previous = {each: signal.signal(each, raise_terminated) for each in watched}

    def restore() -> None:
        for each, handler in previous.items():
            signal.signal(each, handler)

    return restore


class StopRequest:
    """What `stop_on_signals` saw: the signal asked to stop, else None."""

    signal: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn SIGINT/SIGTERM into a request the loop sees, so it can save a checkpoint and return."""
    request = StopRequest()
    previous = {}

    def handler(signum: int, frame: object) -> None:
        request.signal = signum

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class InputFileError(ValueError):
    """A file the user named cannot be read as asked; the message names it."""


class CheckpointError(ValueError):
    """A weights file (a checkpoint, an exported model, classifier weights) is not usable; the message
    says what it is and what was expected."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp_path)`, fsync the file, rename it over `path` (same directory); return `path`.

    Writers signal failure in their own ways (safetensors raises `SafetensorError` on a full disk);
    any failure becomes an `OSError` whose `filename` is `path`, and the temporary file is removed.
    Inside `written_together`, the rename waits for the block's end.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name near the file system's limit leaves no room for the temporary's prefix and suffix.
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name[:TEMP_NAME_KEEP]}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private; give it the usual permissions
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    except InputFileError:  # the writer found its input bad: not a failure to write
        tmp.unlink(missing_ok=True)
        raise
    except Exception as error:
        tmp.unlink(missing_ok=True)
        raise OSError(None, f"could not write the file ({error})", str(path)) from None
    except BaseException:  # KeyboardInterrupt, SystemExit: clean up, then let it through
        tmp.unlink(missing_ok=True)
        raise
    pending = _PENDING.get()
    if pending is not None:
        pending.append((tmp, path))
    else:
        _rename_all([(tmp, path)])
    return path


_PENDING: contextvars.ContextVar[list[tuple[Path, Path]] | None] = contextvars.ContextVar("pending", default=None)


@contextlib.contextmanager
def written_together() -> Iterator[None]:
    """The outputs of one command, all or none: inside the block, `atomic_write` writes and fsyncs
    each file's temporary but renames none; at its end every one is renamed into place, and if the
    block fails (the second file finds the disk full, Ctrl-C) every temporary is removed instead."""
    pending: list[tuple[Path, Path]] = []
    token = _PENDING.set(pending)
    try:
        yield
    except BaseException:
        for tmp, _ in pending:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        _PENDING.reset(token)
    _rename_all(pending)


def _rename_all(renames: list[tuple[Path, Path]]) -> None:
    for tmp, path in renames:
        try:
            os.replace(tmp, path)
        except OSError as error:
            for left, _ in renames:
                left.unlink(missing_ok=True)
            raise OSError(error.errno, error.strerror or str(error), str(path)) from None
    for directory in {path.parent for _, path in renames}:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_at(directory: int, name: str, data: bytes, shown: Path) -> None:
    """`atomic_write` of `data` to `name` in a directory held by descriptor (`os.open(..., O_DIRECTORY)`):
    the temporary is created beside it without following links, and the rename stays in that directory
    whatever its path now leads to. `shown` names the target in errors."""
    tmp = f".{name[:TEMP_NAME_KEEP]}.{secrets.token_hex(4)}.tmp"  # 8 characters, as mkstemp's
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=directory)
        try:
            with open(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, name, src_dir_fd=directory, dst_dir_fd=directory)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=directory)
            raise
        os.fsync(directory)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(shown)) from None


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def regular_file(path: str | Path, what: str) -> Path:
    """`path` if it is an existing regular file; otherwise `InputFileError` saying what it is.

    Opening a FIFO or a device would block forever or read without end, so only regular files
    (or symlinks to them) are accepted.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputFileError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise InputFileError(f"{what} {path} cannot be read: {error.strerror}") from None
    if stat.S_ISDIR(mode):
        raise InputFileError(f"{what} {path} is a directory; give a file")
    if not stat.S_ISREG(mode):
        raise InputFileError(f"{what} {path} is not a regular file (a pipe, socket or device)")
    if not os.access(path, os.R_OK):
        raise PermissionError(errno.EACCES, f"{what} cannot be read: permission denied", str(path))
    return path


def check_writable(path: str | Path) -> Path:
    """Check, without creating anything, that `path`'s directory exists or can be created and written.

    Directories are made only when the file is written, so a refused or failed command leaves no
    empty directories behind.
    """
    path = Path(path)
    if len(os.fsencode(path.name)) > NAME_MAX:
        raise InputFileError(f"the file name {path.name[:40]}... is {len(os.fsencode(path.name))} bytes long; file "
                             f"systems allow {NAME_MAX}")
    if path.is_dir():
        raise InputFileError(f"{path} is a directory")
    existing = path.parent.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputFileError(f"cannot create directory {path.parent}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "permission denied: the directory is not writable", str(existing))
    return path


def output_file(text: str | Path, suffixes: tuple[str, ...]) -> Path:
    """Check before any work that the path has one of `suffixes` and could be written."""
    path = Path(text)
    if path.suffix.lower() not in suffixes:
        raise InputFileError(f"{path}: expected a file ending in {' or '.join(suffixes)}")
    return check_writable(path)


def output_dir(text: str | Path) -> Path:
    """A directory that exists or can be created, checked without creating it."""
    directory = Path(text)
    if directory.exists() and not directory.is_dir():
        raise InputFileError(f"{directory} exists and is not a directory")
    check_writable(directory / "report")
    return directory


def save_npz(path: str | Path, **arrays) -> Path:
    """Write numpy arrays as a compressed `.npz` at `path`, atomically; return the path."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:  # a handle, so numpy does not append ".npz" to the temporary name
            np.savez_compressed(handle, **arrays)

    return atomic_write(path, write)
