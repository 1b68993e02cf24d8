"""Random square crops of a training batch, drawn from the step's randomness (exact resume):
how a CPU trains a model meant for large pictures (the upscaler and its VAE) on small pieces."""

from __future__ import annotations

import torch


def crop_pictures(pixels: torch.Tensor, size: int, randomness) -> torch.Tensor:
    """A `size` square of each picture (B, 3, H, W) at a place drawn from `randomness`."""
    height, width = pixels.shape[-2:]
    tops = randomness.randint(height - size + 1, (len(pixels),)).tolist()
    lefts = randomness.randint(width - size + 1, (len(pixels),)).tolist()
    return torch.stack([p[:, t : t + size, l : l + size] for p, t, l in zip(pixels, tops, lefts)])  # (B, 3, size, size)
