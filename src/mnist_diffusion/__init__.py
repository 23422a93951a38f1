"""mnist-diffusion: train, sample and evaluate denoising diffusion models of handwritten digits.

The short way in is `Pipeline`: `Pipeline.load()` gives the shipped model with the defaults of the
command line (`SampleConfig`), and its `sample`, `complete` and `interpolate` return uint8 digits
that `save_grid` writes as one PNG. The parts below it are exported too, for those who build their own.
"""

import importlib
from typing import Any

# Each public name and the module that defines it, imported on first use (PEP 562), so that
# `import mnist_diffusion` and the command line's start cost nothing before torch is needed.
_HOMES = {
    "Checkpoint": "checkpoint", "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint", "complete": "completion", "DiffusionConfig": "config",
    "ModelConfig": "config", "SampleConfig": "config", "TrainConfig": "config", "preset": "config",
    "DataError": "data", "ensure_mnist": "data", "load_mnist": "data", "interpolate_digits": "interpolation",
    "interpolate_seeds": "interpolation", "Pipeline": "pipeline", "save_grid": "pipeline", "SAMPLERS": "sampling",
    "Denoiser": "sampling", "generate": "sampling", "make_timesteps": "sampling", "NoiseSchedule": "schedule",
    "UNet": "unet",
}

__version__ = "0.1.0"

__all__ = [
    "SAMPLERS",
    "Checkpoint",
    "CheckpointError",
    "DataError",
    "Denoiser",
    "DiffusionConfig",
    "ModelConfig",
    "NoiseSchedule",
    "Pipeline",
    "SampleConfig",
    "TrainConfig",
    "UNet",
    "complete",
    "ensure_mnist",
    "generate",
    "interpolate_digits",
    "interpolate_seeds",
    "load_checkpoint",
    "load_mnist",
    "make_timesteps",
    "preset",
    "save_checkpoint",
    "save_grid",
]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
