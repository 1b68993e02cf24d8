"""How different the images of one prompt are from each other.

No LPIPS network is available offline, so two stand-ins, both averaged over prompts:

- feature distance: the mean Euclidean distance between every pair of a prompt's images
  in the attribute classifier's penultimate features, each feature vector scaled to unit
  length (so 0 = identical content, sqrt(2) = unrelated directions, 2 = opposite). It
  tracks layout and content (where the sun is, how many trees) more than pixel noise.
- pixel std: the standard deviation of each pixel across a prompt's images ([0, 1]
  scale), averaged over pixels and channels. It tracks any change, colour and noise too.

Either means little alone: compare with the same figure on real scenes drawn for the
same prompts (the evaluation reports both). A caption names every feature of its scene,
so real scenes of one prompt differ only in drawing details (cloud shapes, stars, where
the trees stand): a faithful model lands near that figure. Far below it means collapse to
one image; far above means variation the data do not have (features added or dropped, noise).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def mean_pairwise_feature_distance(features: torch.Tensor) -> float | None:
    """Mean distance over the pairs of (N, D) features after unit-length scaling; None for N < 2."""
    if len(features) < 2:
        return None
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    distances = torch.pdist(unit)  # (N*(N-1)/2,)
    return distances.mean().item()


def pixel_std(pixels: torch.Tensor) -> float | None:
    """Std across N images of each pixel, averaged; (N, 3, H, W) in [0, 1]. None for N < 2."""
    if len(pixels) < 2:
        return None
    return pixels.double().std(dim=0).mean().item()


def mean_over_prompts(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
