"""Diversity figures (ldm/scenes/diversity.py)."""

import math

import pytest
import torch

from ldm.scenes.diversity import mean_over_prompts, mean_pairwise_feature_distance, pixel_std


def test_identical_images_have_no_diversity():
    features = torch.tensor([[1.0, 2.0, 3.0]]).repeat(4, 1)
    assert mean_pairwise_feature_distance(features) == pytest.approx(0.0, abs=1e-7)
    assert pixel_std(torch.full((4, 3, 8, 8), 0.3)) == pytest.approx(0.0, abs=1e-7)


def test_feature_distance_ignores_scale_and_reaches_sqrt2_for_orthogonal_features():
    assert mean_pairwise_feature_distance(torch.tensor([[1.0, 0.0], [5.0, 0.0]])) == pytest.approx(0.0, abs=1e-7)
    assert mean_pairwise_feature_distance(torch.eye(3)) == pytest.approx(math.sqrt(2))


def test_more_varied_images_score_higher():
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 8, 8, generator=generator)
    slightly = (base + 0.02 * torch.randn(4, 3, 8, 8, generator=generator)).clamp(0, 1)
    very = torch.rand(4, 3, 8, 8, generator=generator)
    assert pixel_std(very) > pixel_std(slightly) > 0


def test_one_image_has_no_figure_and_means_skip_missing():
    assert mean_pairwise_feature_distance(torch.ones(1, 5)) is None
    assert pixel_std(torch.ones(1, 3, 4, 4)) is None
    assert mean_over_prompts([0.2, None, 0.4]) == pytest.approx(0.3)
    assert mean_over_prompts([None]) is None
