"""mnist-diffusion: train, sample and evaluate denoising diffusion models of handwritten digits.

The short way in is `Pipeline`: `Pipeline.load()` gives the shipped model with the defaults of the
command line (`SampleConfig`), and its `sample`, `complete` and `interpolate` return uint8 digits
that `save_grid` writes as one PNG. The parts below it are exported too, for those who build their own.
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .completion import complete
from .config import DiffusionConfig, ModelConfig, SampleConfig, TrainConfig, preset
from .data import DataError, ensure_mnist, load_mnist
from .interpolation import interpolate_digits, interpolate_seeds
from .pipeline import Pipeline, save_grid
from .sampling import SAMPLERS, Denoiser, generate, make_timesteps
from .schedule import NoiseSchedule
from .unet import UNet

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
