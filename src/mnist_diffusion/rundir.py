"""A training run's directory: its lock, checkpoints, metrics log and config, and nothing else.

Layout:
    config.json                             the three configs, for people to read
    metrics.jsonl                           one JSON object per logged step
    checkpoints/step_XXXXXXXX.safetensors   the last `keep_checkpoints` checkpoints (8-digit step)
    samples/step_XXXXXXXX.png               EMA samples, one row per digit
    train.lock                              held (flock) by the training that owns the directory

Only files named exactly `step_<8 digits>.safetensors` are this package's checkpoints; anything
else in `checkpoints/` is neither read, nor counted, nor deleted.

A directory is used only when it is new, empty or a run of this package (`check_is_run`): a
directory holding other files, or whose entries above are symbolic links, is refused before
anything is written. While a training runs it holds the directory open (`RunDirectory.held`) and
writes, renames and deletes only relative to that descriptor, never following a link: an entry
swapped for a symbolic link mid-run stops the training with a message instead of redirecting a
write or a delete, so nothing outside the run directory is ever created or removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, CheckpointError, checkpoint_bytes, load_checkpoint
from .files import atomic_write_at

CHECKPOINT_DIR = "checkpoints"
SAMPLE_DIR = "samples"
LOCK_FILE = "train.lock"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
CONFIG_SECTIONS = ("model", "diffusion", "train")
_CHECKPOINT_NAME = re.compile(r"step_(\d{8})\.safetensors")
DATA_DIR = "data"  # the prepared images of a run on other data than MNIST (`datasets.store`)
_OWN_DIRS = (CHECKPOINT_DIR, SAMPLE_DIR, DATA_DIR)
_OWN_FILES = (CONFIG_FILE, METRICS_FILE, LOCK_FILE)
# `tempfile.mkstemp`'s random part is 8 characters of [a-z0-9_].
_CHECKPOINT_TEMPORARY = re.compile(r"\.step_\d{8}\.safetensors\.[a-z0-9_]{8}\.tmp")
_TEMPORARY = re.compile(r"\.(config\.json|metrics\.jsonl)\..+\.tmp")  # left by a killed atomic write


class RunDirError(RuntimeError):
    """The run directory cannot be used; the message says why and what was kept."""


class RunInUseError(RunDirError):
    """Another live training holds the directory's lock."""


class NotARunError(ValueError):
    """The directory given as a run directory holds something else; nothing in it was touched."""


def open_own_file(path: Path, flags: int, directory: int | None = None) -> int:
    """`os.open` a file of the run directory for writing, refusing a symbolic link, a hard link to
    another file and anything but a regular file, so a planted link cannot redirect the write.
    With `directory` (a descriptor of the run directory), `path.name` is opened in it."""
    try:
        fd = os.open(path if directory is None else path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                     dir_fd=directory)
    except OSError as error:
        if os.path.islink(path):
            raise RunDirError(f"{path} is a symbolic link; a run directory's files must be its own "
                              f"(remove the link)") from None
        raise RunDirError(f"cannot open {path}: {error.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        what = "is not a regular file" if not stat.S_ISREG(info.st_mode) else "has other hard links"
        raise RunDirError(f"{path} {what}; a run directory's files must be its own (remove it)")
    return fd


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None  # the directory, held open by `held` while a training writes

    @contextlib.contextmanager
    def held(self) -> Iterator[RunDirectory]:
        """Hold the (existing) directory open: every write below goes through this descriptor."""
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise RunDirError(f"cannot open run directory {self.path}: {error.strerror}") from None
        try:
            yield self
        finally:
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def _opened(self, name: str) -> Iterator[int]:
        """A descriptor of the held directory's sub-directory `name` (made if missing), opened without
        following a link; `RunDirError` if something other than a directory took its place."""
        held = self._held()
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=held)
            fd = os.open(name, flags, dir_fd=held)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise RunDirError(f"{self.path / name} was replaced by a symbolic link or a file while the training "
                                  f"ran; nothing was written through it. Put the directory back and resume") from None
            raise RunDirError(f"cannot open {self.path / name}: {error.strerror}") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def write_sample(self, name: str, data: bytes) -> None:
        """`samples/<name>` in the held directory, atomically (`figures.training_grids` calls it)."""
        with self._opened(SAMPLE_DIR) as directory:
            atomic_write_at(directory, name, data, self.path / SAMPLE_DIR / name)

    def check_is_run(self) -> None:
        """`NotARunError` unless the directory is absent, empty or laid out as a run of this package:
        only the entries above, none a symbolic link, and a `config.json` this package wrote beside
        any metrics or samples. Reads only; called before a training writes anything."""
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise NotARunError(f"--run-dir {self.path} exists and is not a directory")
        entries = {entry.name: entry for entry in self.path.iterdir()}
        for name, entry in entries.items():
            if name in _OWN_DIRS + _OWN_FILES and entry.is_symlink():
                raise NotARunError(f"{entry} is a symbolic link; a run directory's files must be its own "
                                   f"(remove the link or choose another --run-dir)")
            if (name in _OWN_DIRS and not entry.is_dir()) or (name in _OWN_FILES and not entry.is_file()):
                raise NotARunError(f"{entry} is not what a training run keeps there; choose another --run-dir")
        foreign = sorted(name for name in entries
                         if name not in _OWN_DIRS + _OWN_FILES and not _TEMPORARY.fullmatch(name))
        if not foreign and (set(entries) & {METRICS_FILE, SAMPLE_DIR}) and not _is_own_config(self.path / CONFIG_FILE):
            foreign = [CONFIG_FILE if CONFIG_FILE in entries else METRICS_FILE]
        elif not foreign and CONFIG_FILE in entries and not _is_own_config(self.path / CONFIG_FILE):
            foreign = [CONFIG_FILE]
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise NotARunError(f"--run-dir {self.path} holds files that are not a training run of mnist-diffusion "
                               f"({shown}); nothing was changed. Give a new or empty directory, or, to resume a "
                               f"run, the directory that holds its checkpoints/")

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return self.path / CHECKPOINT_DIR / f"step_{step:08d}.safetensors"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """`(step, path)` of this package's checkpoints, oldest step first (by the parsed number)."""
        directory = self.path / CHECKPOINT_DIR
        if not directory.is_dir():
            return []
        return sorted((step, directory / name) for step, name in _own_checkpoints(os.listdir(directory))
                      if (directory / name).is_file())

    def loadable_checkpoints(self, warn: Callable[[str], None]) -> list[Checkpoint]:
        """Checkpoints that load, newest first; each that does not is reported through `warn`."""
        loaded = []
        for _, path in reversed(self.checkpoints()):
            try:
                loaded.append(load_checkpoint(path))
            except CheckpointError as error:
                warn(f"skipping unreadable checkpoint: {error}")
        return loaded

    def save(self, checkpoint: Checkpoint, keep: int) -> Path:
        """Write the checkpoint of `checkpoint.step` in the held directory, then delete all but the newest
        `keep` of the checkpoints at or before that step. Newer-numbered files (left by an abandoned
        run) are kept."""
        path = self.checkpoint_path(checkpoint.step)
        with self._opened(CHECKPOINT_DIR) as directory:
            try:
                atomic_write_at(directory, path.name, checkpoint_bytes(checkpoint), path)
            except OSError as error:
                raise RunDirError(f"could not write checkpoint {path}: {error.strerror or error}; "
                                  f"the previous checkpoint is kept") from None
            older = sorted(found for found in _own_checkpoints(os.listdir(directory)) if found[0] <= checkpoint.step)
            for _, name in older[:-keep]:
                with contextlib.suppress(OSError):  # gone already, or not a file: not this run's to remove
                    os.unlink(name, dir_fd=directory)
        return path

    def remove_stale_temporaries(self) -> None:
        """Delete the temporaries a killed checkpoint write left (`files.atomic_write_at`'s names for
        `step_XXXXXXXX.safetensors`), and no other file, whatever it is called."""
        with self._opened(CHECKPOINT_DIR) as directory:
            for name in os.listdir(directory):
                if _CHECKPOINT_TEMPORARY.fullmatch(name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=directory)

    # -- metrics and config ---------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    def append_metrics(self, row: dict[str, Any]) -> None:
        fd = open_own_file(self.metrics_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, self._fd)
        try:
            with open(fd, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        except OSError as error:
            raise RunDirError(f"cannot append to {self.metrics_path}: {error.strerror}") from None

    def truncate_metrics(self, last_step: int) -> None:
        """Drop the lines logged after `last_step` (and any line that is not a logged step: a torn or
        damaged one), so a resumed run's curve continues cleanly."""
        if not self.metrics_path.exists():
            return
        text = self.metrics_path.read_bytes().decode("utf-8", errors="replace")
        kept = [line for line in text.splitlines()
                if (step := _logged_step(line)) is not None and step <= last_step]
        self._write(METRICS_FILE, "".join(line + "\n" for line in kept).encode())

    def write_config(self, *configs: dict[str, Any]) -> None:
        """config.json: the model, diffusion and train configs (as dicts) under `CONFIG_SECTIONS`, the
        layout `check_is_run` recognises as this package's."""
        sections = dict(zip(CONFIG_SECTIONS, configs, strict=True))
        self._write(CONFIG_FILE, json.dumps(sections, indent=2).encode())

    def _write(self, name: str, data: bytes) -> None:
        atomic_write_at(self._held(), name, data, self.path / name)

    def _held(self) -> int:
        if self._fd is None:
            raise RuntimeError("RunDirectory.held() must be entered before writing")
        return self._fd


def _own_checkpoints(names: list[str]) -> Iterator[tuple[int, str]]:
    for name in names:
        if match := _CHECKPOINT_NAME.fullmatch(name):
            yield int(match.group(1)), name


def _is_own_config(path: Path) -> bool:
    """Whether `path` is a `config.json` as `write_config` writes it: an object of the three sections."""
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(config, dict) and set(config) == set(CONFIG_SECTIONS)


def _logged_step(line: str) -> int | None:
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError, RecursionError):  # a damaged line is dropped on resume
        return None
    return step if isinstance(step, int) else None


class RunLock:
    """An exclusive `flock` on RUN_DIR/train.lock, held for the whole run.

    The kernel releases it when the process dies, so a killed training never leaves a stale lock,
    and a pid recorded in the file can never make an unrelated live process (pid reuse) look like
    the owner: the file's text (pid, host, start time) is only there to tell people who holds it.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        while True:
            fd = open_own_file(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_owner(fd)
                os.close(fd)
                raise RunInUseError(f"{self.path.parent} is in use by {owner}; wait for it or stop it "
                                    f"first") from None
            # The previous holder may have unlinked the file between our open and our lock:
            # then we hold a lock on a deleted file, so start again on the path as it is now.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        owner = f"training process {os.getpid()} on {socket.gethostname()}, started {started}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def check_free(run_dir: Path) -> None:
        """`RunInUseError` if a live training holds the run's lock now: the first thing `train` checks,
        before it reads a checkpoint or prepares data. Creates nothing; a free lock is left as it was."""
        try:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return  # no lock file (or not one to read): nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunInUseError(f"{run_dir} is in use by {_read_owner(fd)}; wait for it or stop it first") from None
        finally:
            os.close(fd)  # releases the probe's shared lock

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            # While still locked, so no one else holds this inode; and only if the path still names it:
            # a directory removed and made again holds a new run's lock there, which is not ours to remove.
            if _same_file(self._fd, self.path):
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _read_owner(fd: int) -> str:
    try:
        text = os.pread(fd, 400, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another training process"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False

