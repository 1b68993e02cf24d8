"""Image <-> tensor helpers. Pixels in tensors are (B, 3, H, W) in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> RGB PIL images."""
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    array = array.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    return [Image.fromarray(a) for a in array]


def from_pil(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> (B, 3, H, W) float32 in [-1, 1]."""
    arrays = [np.asarray(image.convert("RGB"), dtype=np.float32) for image in images]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # (B, 3, H, W)
    return batch / 127.5 - 1.0
