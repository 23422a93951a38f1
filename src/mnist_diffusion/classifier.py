"""A small MNIST classifier whose penultimate layer is the feature space of our quality metrics.

Inception-v3 features (standard FID) know nothing of handwriting and need weights this package
cannot download; a CNN trained on MNIST itself separates digits well and scores a batch of 10,000
in seconds on a CPU. `train_classifier` makes it; the shipped weights live in
`mnist_diffusion/weights/classifier.safetensors`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .data import to_model_space
from .files import CheckpointError, InputFileError, atomic_write, regular_file

CLASSIFIER_FILE = "classifier.safetensors"
FEATURE_DIM = 128


class DigitClassifier(nn.Module):
    """conv32-conv32-pool-conv64-conv64-pool-fc128-fc(K) with batch norm; ~0.4M parameters. K = 10
    for MNIST's digits; a classifier of another dataset's classes (`train-classifier --data`) has its own."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.body = nn.Sequential(
            *block(1, 32), *block(32, 32), nn.MaxPool2d(2),  # (B, 32, 14, 14)
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),  # (B, 64, 7, 7)
            nn.Flatten(), nn.Dropout(0.3),
            nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.BatchNorm1d(FEATURE_DIM), nn.ReLU(),  # (B, 128)
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1, 28, 28)` in [-1, 1] -> `(B, 128)`."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def default_classifier_path() -> Path:
    return Path(str(resources.files("mnist_diffusion") / "weights" / CLASSIFIER_FILE))


def load_classifier(path: str | Path | None = None) -> DigitClassifier:
    path = default_classifier_path() if path is None else Path(path)
    if not path.exists():
        raise CheckpointError(f"classifier weights {path} do not exist; run `mnist-diffusion train-classifier`")
    try:
        regular_file(path, "classifier weights")
    except InputFileError as error:
        raise CheckpointError(str(error)) from None
    try:
        state = load_file(str(path))
        head = state.get("head.1.weight")
        model = DigitClassifier(head.shape[0] if head is not None and head.ndim == 2 and 2 <= head.shape[0] <= 1000
                                else 10)
        model.load_state_dict(state)
    except Exception as error:  # safetensors and torch raise several types for a wrong file
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path} is not a digit-classifier weights file ({reason})") from None
    return model.eval()


@torch.no_grad()
def embed(model: DigitClassifier, images: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 `(N, 28, 28)` -> features `(N, 128)` and class probabilities `(N, 10)`, in float64."""
    features, probabilities = [], []
    for start in range(0, len(images), batch_size):
        x = to_model_space(images[start:start + batch_size])
        h = model.features(x)
        features.append(h.double())
        probabilities.append(F.softmax(model.head(h), dim=1).double())
    return torch.cat(features), torch.cat(probabilities)


@dataclass
class ClassifierResult:
    test_accuracy: float
    epochs: int
    seconds: float


def train_classifier(train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor],
                     out: str | Path, *, epochs: int = 3, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                     on_epoch: Callable[[int, float], None] | None = None,
                     on_step: Callable[[], None] | None = None) -> ClassifierResult:
    """Adam with one-cycle decay and random shifts of up to 2 pixels; saves safetensors to `out`. The
    classes are those of the labels (0 to their largest).
    `on_step` is told of every optimizer step (`classifier_steps` in all), `on_epoch` of each epoch's
    test accuracy."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    images, labels = train
    batch_size = min(batch_size, len(images))  # a small set of one's own images still trains
    model = DigitClassifier(int(max(labels.max(), test[1].max())) + 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(images) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    start = time.monotonic()
    accuracy = 0.0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            x = to_model_space(images[index])
            dx, dy = torch.randint(-2, 3, (2,), generator=generator).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))  # digits sit on black borders: a roll is a shift
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if on_step:
                on_step()
        accuracy = evaluate_accuracy(model, *test)
        if on_epoch:
            on_epoch(epoch + 1, accuracy)
    model.eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    from safetensors.torch import save_file

    atomic_write(Path(out), lambda tmp: save_file(state, str(tmp), metadata={"test_accuracy": f"{accuracy:.4f}"}))
    return ClassifierResult(accuracy, epochs, time.monotonic() - start)


def classifier_steps(num_images: int, epochs: int, batch_size: int = 128) -> int:
    """Optimizer steps `train_classifier` takes on `num_images` images."""
    return epochs * (num_images // min(batch_size, num_images))


@torch.no_grad()
def evaluate_accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    _, probabilities = embed(model, images)
    return (probabilities.argmax(1) == labels).double().mean().item()
