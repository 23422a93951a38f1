"""mnist-diffusion: train, sample and evaluate denoising diffusion models of handwritten digits."""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .config import DiffusionConfig, ModelConfig, TrainConfig, preset
from .data import DataError, ensure_mnist, load_mnist
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
    "TrainConfig",
    "UNet",
    "ensure_mnist",
    "generate",
    "load_checkpoint",
    "load_mnist",
    "make_timesteps",
    "preset",
    "save_checkpoint",
]
