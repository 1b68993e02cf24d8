"""RGB PIL image -> square training tensor (3, R, R) in [-1, 1].

Resize the shorter side to R (antialiased), crop R x R (centre or random), optionally
flip. The random choices come from a generator the caller seeds per sample."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image


CROPS = ("center", "random")


@dataclass(frozen=True)
class ImageTransform:
    resolution: int
    crop: str = "center"
    flip: bool = False

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop is {self.crop!r}; expected one of {', '.join(CROPS)}")
        if self.resolution < 1:
            raise ValueError(f"resolution must be positive, got {self.resolution}")

    @property
    def is_random(self) -> bool:
        return self.crop == "random" or self.flip

    def describe(self) -> dict:
        """The settings that decide the output pixels (part of the latent cache key)."""
        return {"resolution": self.resolution, "crop": self.crop, "flip": self.flip, "resample": "bicubic"}

    def __call__(self, image: Image.Image, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`generator` drives the random crop and flip; it is required when they are on."""
        if self.is_random and generator is None:
            raise ValueError("a random crop or flip needs a seeded generator")
        size = self.resolution
        width, height = image.size
        scale = size / min(width, height)
        # The crop box in resized coordinates, then mapped back: resizing only the box
        # gives the same pixels as resizing everything and cropping, for less work.
        resized_w, resized_h = max(size, round(width * scale)), max(size, round(height * scale))
        left, top = self._offset(resized_w - size, generator), self._offset(resized_h - size, generator)
        box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
        # PIL's bicubic widens its kernel when downscaling: antialiased.
        image = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
        if self.flip and torch.rand((), generator=generator) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_tensor(image)  # (3, R, R)

    def _offset(self, slack: int, generator: Optional[torch.Generator]) -> int:
        if self.crop == "center" or slack == 0:
            return slack // 2
        return int(torch.randint(0, slack + 1, (), generator=generator))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> (3, H, W) float32 in [-1, 1] (ldm.images.from_pil for one image). The
    arithmetic is done in numpy: in the main process, torch's intra-op threads made this
    step 30x slower (40 ms per 256px image) on a 2-core machine."""
    channels_first = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))  # (3, H, W)
    return torch.from_numpy(channels_first.astype(np.float32) / np.float32(127.5) - np.float32(1.0))
