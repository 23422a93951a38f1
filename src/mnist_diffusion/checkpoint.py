"""Checkpoints: one safetensors file holding tensors, with the configs and counters as JSON metadata.

Nothing is ever unpickled. A file holds:
- `model.*`: the network weights (for a shipped model, the EMA weights);
- `ema.*`: the exponential moving average of the weights (training checkpoints);
- `optim.*`: AdamW state tensors (training checkpoints);
- `rng.*`: generator states as uint8 tensors, so a resumed run draws the same numbers.
The metadata carries `format` / `format_version`, `model_config`, `diffusion_config`, and for a
training checkpoint `train_config`, `step`, `images_seen` and the optimizer's param groups.

The config lives inside the weights file rather than in a JSON file beside it, so a checkpoint
copied on its own still rebuilds its model; `train` also writes `config.json` in the run
directory for people to read. Writes are atomic: temporary file, fsync, rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import DiffusionConfig, ModelConfig, TrainConfig, from_dict, to_dict
from .unet import UNet

# Recipe fields added after format version 1 was written, with the values that reproduce what
# runs saved before them did, so resuming such a run keeps its recipe.
LEGACY_TRAIN_SETTINGS = {"lr_decay": "none", "min_snr_gamma": 0.0}

FORMAT = "mnist-diffusion"
FORMAT_VERSION = 1
DEFAULT_MODEL = "default.safetensors"


class CheckpointError(ValueError):
    """A file is not a usable checkpoint; the message says what it is and what was expected."""


@dataclass
class Checkpoint:
    model_config: ModelConfig
    diffusion_config: DiffusionConfig
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None = None
    optimizer_state: dict[str, Any] | None = None
    rng_state: dict[str, torch.Tensor] = field(default_factory=dict)
    train_config: TrainConfig | None = None
    step: int = 0
    images_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def build_model(self, use_ema: bool = True) -> UNet:
        """Rebuild the network from the stored config and load the (EMA, when present) weights."""
        model = UNet(self.model_config)
        state = self.ema_state if (use_ema and self.ema_state is not None) else self.model_state
        model.load_state_dict(state)
        return model.eval()


def default_model_path() -> Path:
    return Path(str(resources.files("mnist_diffusion") / "weights" / DEFAULT_MODEL))


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    tensors = {}
    for index, param_state in state["state"].items():
        for key, value in param_state.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).clone()
    return tensors, state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": groups}


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> Path:
    """Write `checkpoint` to `path` atomically; return the path."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    for prefix, state in (("model", checkpoint.model_state), ("ema", checkpoint.ema_state)):
        for name, value in (state or {}).items():
            tensors[f"{prefix}.{name}"] = value.detach().cpu().contiguous()
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": to_dict(checkpoint.model_config),
        "diffusion_config": to_dict(checkpoint.diffusion_config),
        "step": checkpoint.step,
        "images_seen": checkpoint.images_seen,
        "extra": checkpoint.extra,
    }
    if checkpoint.train_config is not None:
        metadata["train_config"] = to_dict(checkpoint.train_config)
    if checkpoint.optimizer_state is not None:
        optim_tensors, groups = _flatten_optimizer(checkpoint.optimizer_state)
        tensors.update({k: v.cpu().contiguous() for k, v in optim_tensors.items()})
        metadata["optimizer_param_groups"] = groups
    for name, value in checkpoint.rng_state.items():
        tensors[f"rng.{name}"] = value.cpu().contiguous()
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"json": json.dumps(metadata)}))
    return path


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)`, fsync the file, then rename it over `path` (same directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private; give it the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def load_checkpoint(path: str | Path | None = None) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; `None` loads the shipped default model."""
    path = default_model_path() if path is None else Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; give a .safetensors file")
    try:
        tensors = load_file(str(path))
        with open(path, "rb") as handle:
            header_len = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(header_len))
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is not a safetensors file ({error}); expected a checkpoint written by mnist-diffusion"
        ) from None
    raw = header.get("__metadata__", {}).get("json")
    try:
        meta = json.loads(raw) if raw is not None else {}
    except ValueError:
        meta = {}
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not an mnist-diffusion checkpoint (no '{FORMAT}' metadata)"
        )
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this mnist-diffusion reads version {FORMAT_VERSION}"
        )
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}, "rng": {}}
    for name, value in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix in groups:
            groups[prefix][rest] = value
    try:
        checkpoint = Checkpoint(
            model_config=from_dict(ModelConfig, meta["model_config"]),
            diffusion_config=from_dict(DiffusionConfig, meta["diffusion_config"]),
            model_state=groups["model"],
            ema_state=groups["ema"] or None,
            optimizer_state=(_unflatten_optimizer({f"optim.{k}": v for k, v in groups["optim"].items()},
                                                  meta["optimizer_param_groups"])
                             if "optimizer_param_groups" in meta else None),
            rng_state=groups["rng"],
            train_config=(from_dict(TrainConfig, LEGACY_TRAIN_SETTINGS | meta["train_config"])
                          if "train_config" in meta else None),
            step=int(meta.get("step", 0)),
            images_seen=int(meta.get("images_seen", 0)),
            extra=dict(meta.get("extra", {})),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has a damaged mnist-diffusion header: {error}") from None
    return checkpoint


def export_model(checkpoint: Checkpoint, path: str | Path, use_ema: bool = True) -> Path:
    """Write only the weights for sampling (EMA by default) and the configs: a shippable model."""
    state = checkpoint.ema_state if (use_ema and checkpoint.ema_state is not None) else checkpoint.model_state
    slim = Checkpoint(checkpoint.model_config, checkpoint.diffusion_config, state,
                      step=checkpoint.step, images_seen=checkpoint.images_seen, extra=checkpoint.extra)
    return save_checkpoint(slim, path)
