"""Quality metrics for generated digits, all against the 10,000 MNIST test images.

In the feature space of the project's own MNIST classifier (`classifier.py`):
- FID (Heusel et al. 2017) and KID (Binkowski et al. 2018, unbiased MMD^2 with the cubic kernel);
- precision / recall (Kynkaanniemi et al. 2019) and density / coverage (Naeem et al. 2020), k = 5.
From the classifier's predictions: the class histogram, its KL divergence from uniform, the mean
confidence, and for conditional samples the fraction classified as the digit asked for.
In pixel space: each sample's nearest and second-nearest training image, the fraction of near
copies (nearest < 1/3 of second nearest), the median nearest distance, and duplicates within the set.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .classifier import DigitClassifier, embed
from .files import atomic_write

NEAREST_K = 5
COPY_RATIO = 1.0 / 3.0
# Rows of a distance matrix computed at once: 2048 x 10,000 float32 distances are 80 MB.
DISTANCE_CHUNK = 2048
# Smallest sets each metric is defined for: a covariance needs 2 points, the k-NN radii of
# precision/recall/density/coverage need k + 1, the within-set duplicate check 3 (itself excluded,
# two neighbours). Below FID_RELIABLE_N the FID of even perfect samples is dominated by its bias.
MIN_SAMPLES = NEAREST_K + 1
FID_RELIABLE_N = 2000


# -- feature-space metrics --------------------------------------------------------------------

def feature_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean `(D,)` and covariance `(D, D)` (unbiased), float64."""
    x = features.double().numpy()
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), Heusel et al. (2017), eq. (6).

    Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2): a symmetric PSD matrix, so eigh suffices
    and no complex parts appear (scipy.linalg.sqrtm is not needed).
    """
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    value = float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(value, 0.0)


def fid(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def kid(features_a: torch.Tensor, features_b: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, mean and std over random subsets."""
    generator = torch.Generator().manual_seed(seed)
    a, b = features_a.double(), features_b.double()
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=generator)[:m]]
        y = b[torch.randperm(len(b), generator=generator)[:m]]
        k_xx, k_yy, k_xy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off_diagonal = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
        values.append((off_diagonal - 2 * k_xy.mean()).item())
    return float(np.mean(values)), float(np.std(values))


def _distance_blocks(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[slice, torch.Tensor]]:
    """Euclidean distances from `a` to `b` a block of rows at a time: `(rows, (len(rows), len(b)))`."""
    for start in range(0, len(a), DISTANCE_CHUNK):
        rows = slice(start, start + DISTANCE_CHUNK)
        yield rows, torch.cdist(a[rows], b)


def _kth_neighbour_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each point of `x` to its k-th nearest other point."""
    # Column 0 of each sorted row is the point itself, at distance 0.
    return torch.cat([d.topk(k + 1, dim=1, largest=False).values[:, k] for _, d in _distance_blocks(x, x)])


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = NEAREST_K,
         real_radius: torch.Tensor | None = None) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al. 2019) and density, coverage (Naeem et al. 2020, eqs. 1-4).

    `real_radius` (the k-NN radii of `real`) may be passed in when one reference scores many sets.
    """
    real, fake = real.float(), fake.float()
    if real_radius is None:
        real_radius = _kth_neighbour_radius(real, k)  # (R,)
    fake_radius = _kth_neighbour_radius(fake, k)  # (F,)
    inside_real = torch.zeros(len(fake), dtype=torch.long)  # how many real balls hold each fake
    covered = torch.zeros(len(real), dtype=torch.bool)
    recalled = torch.zeros(len(real), dtype=torch.bool)
    for rows, d in _distance_blocks(real, fake):  # d: (rows, F)
        in_ball = d <= real_radius[rows, None]
        inside_real += in_ball.sum(0)
        covered[rows] = in_ball.any(1)
        recalled[rows] = (d <= fake_radius[None, :]).any(1)
    return {
        "precision": (inside_real > 0).double().mean().item(),
        "recall": recalled.double().mean().item(),
        "density": inside_real.double().sum().item() / (k * len(fake)),
        "coverage": covered.double().mean().item(),
    }


# -- classifier-output metrics ----------------------------------------------------------------

def class_histogram(probabilities: torch.Tensor) -> np.ndarray:
    predicted = probabilities.argmax(1)
    return torch.bincount(predicted, minlength=probabilities.shape[1]).double().numpy() / len(predicted)


def kl_from_uniform(histogram: np.ndarray) -> float:
    """KL(p || uniform) = log K - H(p); log 10 when every digit is the same class."""
    p = histogram[histogram > 0]
    return float(math.log(len(histogram)) + (p * np.log(p)).sum())


# -- what a person sees first: background haze and stray dots ----------------------------------

INK_THRESHOLD = 50  # a pixel above this (of 255) is ink


def zero_pixel_share(images: torch.Tensor) -> float:
    """Share of pixels exactly 0: 81% in MNIST; a model that leaves a faint grey haze scores far less."""
    return (images == 0).double().mean().item()


def white_pixel_share(images: torch.Tensor) -> float:
    """Share of pixels exactly 255: 0.7% in MNIST, whose stroke cores sit at 251-254."""
    return (images == 255).double().mean().item()


@torch.no_grad()
def ink_components(images: torch.Tensor, threshold: int = INK_THRESHOLD) -> torch.Tensor:
    """Connected pieces of ink (pixels > `threshold`, 8-connected) in each uint8 image `(N, H, W)` -> `(N,)`.

    Every ink pixel starts with its own number and takes the largest number among its ink
    neighbours until nothing changes; each piece then carries the number of one of its pixels.
    """
    ink = images[:, None] > threshold  # (N, 1, H, W)
    count, height, width = images.shape
    ids = torch.arange(1, height * width + 1, dtype=torch.float32).reshape(1, 1, height, width)
    labels = torch.where(ink, ids.expand(count, 1, height, width), torch.zeros(()))  # (N, 1, H, W)
    active = torch.arange(count)  # images whose numbers still change (most settle in a few dozen rounds)
    while len(active):
        spread = torch.nn.functional.max_pool2d(labels[active], 3, stride=1, padding=1)
        spread = torch.where(ink[active], spread, torch.zeros(()))
        changed = (spread != labels[active]).flatten(1).any(1)
        labels[active] = spread
        active = active[changed]
    flat = labels.flatten(1)  # (N, H*W); a piece's number is its pixel whose own id equals it
    return ((flat == ids.flatten()[None]) & (flat > 0)).sum(1)


def stray_ink_share(images: torch.Tensor) -> float:
    """Share of digits with more than one piece of ink (8-connected pixels above `INK_THRESHOLD`)."""
    return (ink_components(images) > 1).double().mean().item()


# -- memorization -----------------------------------------------------------------------------

@torch.no_grad()
def nearest_two(queries: torch.Tensor, references: torch.Tensor, exclude_self: bool = False,
                chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For each query (uint8 `(N, 28, 28)`): distances to its nearest and second-nearest reference
    in pixel space (pixels in [0, 1]) and the nearest one's index."""
    q = queries.reshape(len(queries), -1).float() / 255
    r = references.reshape(len(references), -1).float() / 255
    r_sq = (r * r).sum(1)
    first, second, index = [], [], []
    for i in range(0, len(q), chunk):
        block = q[i:i + chunk]
        d2 = (block * block).sum(1, keepdim=True) - 2 * block @ r.T + r_sq[None, :]  # (chunk, R)
        if exclude_self:
            d2[torch.arange(len(block)), torch.arange(i, i + len(block))] = float("inf")
        values, indices = d2.clamp_min(0).topk(2, dim=1, largest=False)
        first.append(values[:, 0].sqrt())
        second.append(values[:, 1].sqrt())
        index.append(indices[:, 0])
    return torch.cat(first), torch.cat(second), torch.cat(index)


@dataclass
class Memorization:
    """How close samples come to the training set and to each other (pixel space, [0, 1])."""

    near_copy_rate: float  # nearest training image closer than COPY_RATIO x the second nearest
    median_nearest_distance: float
    duplicate_rate: float  # the same test within the sample set itself
    nearest_distance: torch.Tensor  # (N,) to the nearest training image
    second_distance: torch.Tensor  # (N,) to the second nearest
    nearest_index: torch.Tensor  # (N,) index of the nearest training image

    def closest(self, count: int) -> torch.Tensor:
        """Indices of the `count` samples most like a training image (smallest distance ratio)."""
        return torch.argsort(self.nearest_distance / self.second_distance)[:count]


def memorization(samples: torch.Tensor, train_images: torch.Tensor) -> Memorization:
    d1, d2, index = nearest_two(samples, train_images)
    s1, s2, _ = nearest_two(samples, samples, exclude_self=True)
    return Memorization(near_copy_rate=(d1 < COPY_RATIO * d2).double().mean().item(),
                        median_nearest_distance=d1.median().item(),
                        duplicate_rate=(s1 < COPY_RATIO * s2).double().mean().item(),
                        nearest_distance=d1, second_distance=d2, nearest_index=index)


# -- the report -------------------------------------------------------------------------------

@dataclass
class ScoreRow:
    """One scored set of images: a row of the evaluation table."""

    name: str
    count: int
    fid: float | None = None
    kid_mean: float | None = None
    kid_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None
    kl_uniform: float | None = None
    confidence: float | None = None
    conditional_accuracy: float | None = None
    near_copy_rate: float | None = None
    median_nearest_distance: float | None = None
    duplicate_rate: float | None = None
    inception_fid: float | None = None
    zero_pixels: float | None = None  # share of pixels exactly 0
    stray_ink: float | None = None  # share of digits with more than one piece of ink
    histogram: list[float] = field(default_factory=list)


class Evaluator:
    """Holds the classifier and the reference features, so several sets are scored the same way."""

    def __init__(self, classifier: DigitClassifier, test_images: torch.Tensor, train_images: torch.Tensor) -> None:
        self.classifier = classifier
        self.train_images = train_images
        self.test_features, _ = embed(classifier, test_images)
        self.test_stats = feature_stats(self.test_features)
        self.test_radius = _kth_neighbour_radius(self.test_features.float(), NEAREST_K)

    def score(self, name: str, images: torch.Tensor, labels: torch.Tensor | None = None, *,
              distribution: bool = True, memorize: bool = True) -> tuple[ScoreRow, Memorization | None]:
        """Score uint8 `(N, 28, 28)` images (and the digits they were asked to be, `(N,)`); the
        memorization details come back for the nearest-neighbour figure."""
        check_samples(images, labels)
        features, probabilities = embed(self.classifier, images)
        histogram = class_histogram(probabilities)
        row = ScoreRow(name=name, count=len(images), histogram=histogram.round(4).tolist(),
                  kl_uniform=kl_from_uniform(histogram), confidence=probabilities.max(1).values.mean().item())
        if labels is not None:
            row.conditional_accuracy = (probabilities.argmax(1) == labels).double().mean().item()
        row.zero_pixels, row.stray_ink = zero_pixel_share(images), stray_ink_share(images)
        if distribution:
            row.fid = frechet_distance(*feature_stats(features), *self.test_stats)
            row.kid_mean, row.kid_std = kid(features, self.test_features)
            for key, value in prdc(self.test_features, features, real_radius=self.test_radius).items():
                setattr(row, key, value)
        copies = memorization(images, self.train_images) if memorize else None
        if copies is not None:
            row.near_copy_rate = copies.near_copy_rate
            row.median_nearest_distance = copies.median_nearest_distance
            row.duplicate_rate = copies.duplicate_rate
        return row, copies


def check_samples(images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """`ValueError` unless `images` is uint8 `(N, 28, 28)` with N >= MIN_SAMPLES and `labels`, if
    given, holds N digits 0-9 as integers: all checked before any scoring work."""
    if images.dtype != torch.uint8 or images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"expected uint8 images shaped (N, 28, 28), got {images.dtype} {tuple(images.shape)}")
    if len(images) < MIN_SAMPLES:
        raise ValueError(f"got {len(images)} images; the metrics need at least {MIN_SAMPLES} (precision, recall, "
                         f"density and coverage use {NEAREST_K} nearest neighbours), and FID means little below "
                         f"{FID_RELIABLE_N}")
    if labels is None:
        return
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be one digit per image, shaped ({len(images)},), got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers 0-9, got {labels.dtype}")
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) <= 9:
        raise ValueError(f"labels must be digits 0-9, got values from {int(labels.min())} to {int(labels.max())}")


COLUMNS = [("fid", "FID", "{:.3f}"), ("kid_mean", "KID x1e3", "{:.2f}"), ("precision", "precision", "{:.3f}"),
           ("recall", "recall", "{:.3f}"), ("density", "density", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
           ("kl_uniform", "KL from uniform", "{:.4f}"), ("confidence", "confidence", "{:.3f}"),
           ("conditional_accuracy", "digit asked for", "{:.4f}"), ("near_copy_rate", "near copies", "{:.4f}"),
           ("median_nearest_distance", "nearest train dist", "{:.2f}"), ("duplicate_rate", "duplicates", "{:.4f}"),
           ("zero_pixels", "zero pixels", "{:.3f}"), ("stray_ink", "several ink pieces", "{:.3f}"),
           ("inception_fid", "Inception FID", "{:.2f}")]


def _cell(row: ScoreRow, key: str, fmt: str) -> str:
    value = getattr(row, key)
    if value is None:
        return "-"
    if key == "kid_mean":
        return f"{value * 1e3:.2f}±{(row.kid_std or 0) * 1e3:.2f}"
    return fmt.format(value)


def format_table(rows: list[ScoreRow], markdown: bool = False) -> str:
    columns = [c for c in COLUMNS if c[0] != "inception_fid" or any(r.inception_fid is not None for r in rows)]
    header = ["set", "N"] + [title for _, title, _ in columns]
    body = [[row.name, str(row.count)] + [_cell(row, key, fmt) for key, _, fmt in columns] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths,
                                                                                                      strict=True)))
                     for cells in [header, *body])


def write_report(rows: list[ScoreRow], settings: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    payload = {"settings": settings, "rows": [asdict(row) for row in rows]}
    json_path, md_path = out_dir / "report.json", out_dir / "report.md"
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2)))
    lines = ["# mnist-diffusion evaluation", "",
             "Features: the classifier's 128-d penultimate layer (the shipped MNIST classifier unless the settings "
             f"name another); reference: {settings.get('reference', 'the 10,000 MNIST test images')}. KID is x1e3 "
             "(mean ± std over 100 subsets of 1,000). Near copies: nearest training image closer than 1/3 of the "
             "second nearest (pixel space, [0, 1]).", "",
             format_table(rows, markdown=True), "", "Settings:", "", "```", json.dumps(settings, indent=2), "```", ""]
    atomic_write(md_path, lambda tmp: tmp.write_text("\n".join(lines)))
    return json_path, md_path
