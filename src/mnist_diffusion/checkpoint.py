"""Checkpoints: one safetensors file holding tensors, with the configs and counters as JSON metadata.

Nothing is ever unpickled. A file holds:
- `model.*`: the network weights (for a shipped model, the EMA weights);
- `ema.*`: the exponential moving average of the weights (training checkpoints);
- `optim.*`: AdamW state tensors (training checkpoints).
The metadata carries `format` / `format_version`, `model_config`, `diffusion_config`, and for a
training checkpoint `train_config`, `step`, `images_seen` and the optimizer's param groups.

The config lives inside the weights file rather than in a JSON file beside it, so a checkpoint
copied on its own still rebuilds its model; `train` also writes `config.json` in the run
directory for people to read. Writes are atomic (`files.atomic_write`).

Reading validates everything before building anything: the file is a regular file, the metadata
is a JSON object of this format and version, the configs are within `config.py`'s limits, and
every weight tensor's name and shape is what that config's network has; the first problem found
is reported in one line naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .config import DiffusionConfig, ModelConfig, TrainConfig, from_dict, to_dict
from .files import CheckpointError, InputFileError, atomic_write, regular_file
from .schedule import NoiseSchedule
from .unet import UNet

# Recipe fields added after format version 1 was written, with the values that reproduce what
# runs saved before them did, so resuming such a run keeps its recipe.
LEGACY_TRAIN_SETTINGS = {"lr_decay": "none", "min_snr_gamma": 0.0}

FORMAT = "mnist-diffusion"
FORMAT_VERSION = 1
DEFAULT_MODEL = "default.safetensors"


@dataclass
class Checkpoint:
    model_config: ModelConfig
    diffusion_config: DiffusionConfig
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None = None
    optimizer_state: dict[str, Any] | None = None
    train_config: TrainConfig | None = None
    step: int = 0
    images_seen: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def weights(self, use_ema: bool = True) -> dict[str, torch.Tensor]:
        """The EMA weights when asked for and present, else the raw ones."""
        return self.ema_state if (use_ema and self.ema_state is not None) else self.model_state

    def build_model(self, use_ema: bool = True) -> UNet:
        """Rebuild the network from the stored config and load the (EMA, when present) weights."""
        model = UNet(self.model_config)
        model.load_state_dict(self.weights(use_ema))
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
    data = checkpoint_bytes(checkpoint)
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def checkpoint_bytes(checkpoint: Checkpoint) -> bytes:
    """The safetensors file of `checkpoint`, as bytes (`save_checkpoint` writes them)."""
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
    return save(tensors, metadata={"json": json.dumps(metadata)})


def load_checkpoint(path: str | Path | None = None) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; `None` loads the shipped default model."""
    path = default_model_path() if path is None else Path(path)
    try:
        regular_file(path, "checkpoint")
    except InputFileError as error:
        raise CheckpointError(str(error)) from None
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
            shapes = {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(
            f"{path} is not a safetensors file ({error}); expected a checkpoint written by mnist-diffusion"
        ) from None
    meta = _read_metadata(path, metadata)
    try:
        model_config = from_dict(ModelConfig, meta["model_config"])
        diffusion_config = from_dict(DiffusionConfig, meta["diffusion_config"])
        train_config = (from_dict(TrainConfig, LEGACY_TRAIN_SETTINGS | meta["train_config"])
                        if "train_config" in meta else None)
        step, images_seen = _count(meta, "step"), _count(meta, "images_seen")
        extra = _check_extra(meta.get("extra", {}))
        groups_meta = meta.get("optimizer_param_groups")
        if groups_meta is not None:
            _check_param_groups(groups_meta)
        NoiseSchedule(diffusion_config)  # a schedule the samplers can divide by
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has a damaged mnist-diffusion header: {error}") from None
    _check_weight_shapes(path, model_config, shapes)
    groups = _read_tensor_groups(path)
    try:
        optimizer_state = (_unflatten_optimizer({f"optim.{k}": v for k, v in groups["optim"].items()},
                                                meta["optimizer_param_groups"])
                           if "optimizer_param_groups" in meta else None)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has damaged optimizer state: {error}") from None
    return Checkpoint(model_config=model_config, diffusion_config=diffusion_config, model_state=groups["model"],
                      ema_state=groups["ema"] or None, optimizer_state=optimizer_state, train_config=train_config,
                      step=step, images_seen=images_seen, extra=dict(extra))


def _read_tensor_groups(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The file's tensors by prefix (`model`, `ema`, `optim`), each a finite floating-point tensor
    (an optimizer's step counter excepted), or `CheckpointError` naming the first that is not."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: the tensors cannot be read ({error})") from None
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "ema": {}, "optim": {}}
    for name, value in tensors.items():
        prefix, _, rest = name.partition(".")
        if prefix not in groups:
            continue
        groups[prefix][rest] = value
        if not value.is_floating_point() and not (prefix == "optim" and rest.endswith(".step")):
            raise CheckpointError(f"{path}: tensor '{name}' holds {value.dtype} values; weights are floating point")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: tensor '{name}' holds NaN or infinite values")
    return groups


def _read_metadata(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The JSON object stored under the `json` metadata key, checked for this format and version."""
    try:
        meta = json.loads(metadata["json"]) if "json" in metadata else {}
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        meta = {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a safetensors file but not an mnist-diffusion checkpoint (no '{FORMAT}' metadata)"
        )
    version = meta.get("format_version")
    if type(version) is not int:
        raise CheckpointError(f"{path} has a damaged header: format_version must be the number "
                              f"{FORMAT_VERSION}, got {json.dumps(version)}")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this mnist-diffusion reads version {FORMAT_VERSION}"
        )
    return meta


def _check_extra(extra: Any) -> dict[str, Any]:
    """The `extra` object: the training clocks, when present, are finite times >= 0 in seconds."""
    if not isinstance(extra, dict):
        raise ValueError("'extra' must be a JSON object")
    for key in ("elapsed_s", "warmup_elapsed_s"):
        value = extra.get(key)
        if key in extra and (type(value) not in (int, float) or not 0 <= value < 1e9):
            raise ValueError(f"extra.{key} must be a time in seconds from 0 to 1e9, got {json.dumps(value)}")
    return extra


def _check_param_groups(groups: Any) -> None:
    """AdamW's param groups as JSON: objects whose `params` are indices and whose settings are
    finite numbers, flags or null (lists of numbers for `betas`)."""
    if not isinstance(groups, list) or not all(isinstance(group, dict) for group in groups):
        raise ValueError("'optimizer_param_groups' must be a list of JSON objects")
    for group in groups:
        params = group.get("params")
        if not isinstance(params, list) or not all(type(index) is int and index >= 0 for index in params):
            raise ValueError("each optimizer param group needs 'params', a list of indices")
        for key, value in group.items():
            values = value if key == "betas" and isinstance(value, list) else [value]
            if key != "params" and not all(_is_setting(item) for item in values):
                raise ValueError(f"optimizer setting '{key}' must be a finite number, true, false or null, "
                                 f"got {json.dumps(value)[:40]}")


def _is_setting(value: Any) -> bool:
    if value is None or type(value) is bool:
        return True
    return type(value) in (int, float) and math.isfinite(value)


def _count(meta: dict[str, Any], key: str) -> int:
    value = meta.get(key, 0)
    if type(value) is not int or value < 0:
        raise ValueError(f"'{key}' must be a whole number >= 0, got {json.dumps(value)}")
    return value


def expected_weight_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the network's state dict, without allocating the weights."""
    with torch.device("meta"):
        model = UNet(config)
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def _check_weight_shapes(path: Path, config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Raise `CheckpointError` naming the first `model.*` / `ema.*` tensor that is missing, extra or
    of the wrong shape for `config`."""
    expected = expected_weight_shapes(config)
    for prefix in ("model", "ema"):
        stored = {name[len(prefix) + 1:]: shape for name, shape in shapes.items() if name.startswith(prefix + ".")}
        if prefix == "ema" and not stored:
            continue
        for name, shape in expected.items():
            if name not in stored:
                raise CheckpointError(f"{path}: tensor '{prefix}.{name}' is missing")
            if stored[name] != shape:
                raise CheckpointError(f"{path}: tensor '{prefix}.{name}' has shape {list(stored[name])}; "
                                      f"the stored model config needs {list(shape)}")
        for name in stored:
            if name not in expected:
                raise CheckpointError(f"{path}: tensor '{prefix}.{name}' is not part of the model its config "
                                      f"describes")


def export_model(checkpoint: Checkpoint, path: str | Path, use_ema: bool = True) -> Path:
    """Write only the weights for sampling (EMA by default) and the configs: a shippable model."""
    slim = Checkpoint(checkpoint.model_config, checkpoint.diffusion_config, checkpoint.weights(use_ema),
                      step=checkpoint.step, images_seen=checkpoint.images_seen, extra=checkpoint.extra)
    return save_checkpoint(slim, path)
