"""A training run's directory: its lock, checkpoints, metrics log and config, and nothing else.

Layout:
    config.json                             the three configs, for people to read
    metrics.jsonl                           one JSON object per logged step
    checkpoints/step_XXXXXXXX.safetensors   the last `keep_checkpoints` checkpoints (8-digit step)
    samples/step_XXXXXXXX.png               EMA samples, one row per digit
    train.lock                              held (flock) by the training that owns the directory

Only files named exactly `step_<8 digits>.safetensors` are this package's checkpoints; anything
else in `checkpoints/` is neither read, nor counted, nor deleted.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .files import atomic_write

CHECKPOINT_DIR = "checkpoints"
SAMPLE_DIR = "samples"
LOCK_FILE = "train.lock"
METRICS_FILE = "metrics.jsonl"
_CHECKPOINT_NAME = re.compile(r"step_(\d{8})\.safetensors")


class RunDirError(RuntimeError):
    """The run directory cannot be used; the message says why and what was kept."""


class RunInUseError(RunDirError):
    """Another live training holds the directory's lock."""


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_path(self, step: int) -> Path:
        return self.path / CHECKPOINT_DIR / f"step_{step:08d}.safetensors"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """`(step, path)` of this package's checkpoints, oldest step first (by the parsed number)."""
        found = []
        for path in (self.path / CHECKPOINT_DIR).glob("step_*.safetensors"):
            match = _CHECKPOINT_NAME.fullmatch(path.name)
            if match and path.is_file():
                found.append((int(match.group(1)), path))
        return sorted(found)

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
        """Write the checkpoint of `checkpoint.step`, then delete all but the newest `keep` of the
        checkpoints at or before that step. Newer-numbered files (left by an abandoned run) are kept."""
        path = self.checkpoint_path(checkpoint.step)
        try:
            save_checkpoint(checkpoint, path)
        except OSError as error:
            raise RunDirError(f"could not write checkpoint {path}: {error.strerror or error}; "
                              f"the previous checkpoint is kept") from None
        older = [p for step, p in self.checkpoints() if step <= checkpoint.step]
        for old in older[:-keep]:
            old.unlink(missing_ok=True)
        return path

    def remove_stale_temporaries(self) -> None:
        for stale in (self.path / CHECKPOINT_DIR).glob(".step_*.tmp"):  # left by a killed write
            stale.unlink(missing_ok=True)

    # -- metrics and config ---------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_FILE

    def append_metrics(self, row: dict[str, Any]) -> None:
        try:
            with open(self.metrics_path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
        except OSError as error:
            raise RunDirError(f"cannot append to {self.metrics_path}: {error.strerror}") from None

    def truncate_metrics(self, last_step: int) -> None:
        """Drop the lines logged after `last_step`, so a resumed run's curve continues cleanly."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if (step := _logged_step(line)) is not None and step <= last_step]
        atomic_write(self.metrics_path, lambda tmp: tmp.write_text("".join(line + "\n" for line in kept)))

    def write_config(self, configs: dict[str, Any]) -> None:
        atomic_write(self.path / "config.json", lambda tmp: tmp.write_text(json.dumps(configs, indent=2)))


def _logged_step(line: str) -> int | None:
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
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
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still locked, so no one else holds this inode
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

