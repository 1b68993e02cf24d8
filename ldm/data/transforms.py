"""RGB PIL image -> training tensor (3, H, W) in [-1, 1]: a square R x R, or a bucket's W x H.

Resize (antialiased) so the image just covers the target, crop the target (centre or random),
optionally flip. The random choices come from a generator the caller seeds per sample. Also
says where the crop was: SDXL's size conditioning reads (top, left) in the resized image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image


CROPS = ("center", "random")
Size = tuple[int, int]


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

    def __call__(self, image: Image.Image, generator: Optional[torch.Generator] = None, size: Optional[Size] = None) -> torch.Tensor:
        """(3, H, W): `size` (width, height), a bucket, or the square R x R."""
        return self.crop_of(image, generator, size)[0]

    def crop_of(self, image: Image.Image, generator: Optional[torch.Generator] = None, size: Optional[Size] = None) -> tuple[torch.Tensor, Size]:
        """(pixels (3, H, W), (top, left) of the crop in the resized image). `generator` drives
        the random crop and flip; it is required when they are on. A flipped picture's left is
        measured in the flipped image (as kohya's SDXL scripts do)."""
        if self.is_random and generator is None:
            raise ValueError("a random crop or flip needs a seeded generator")
        target_w, target_h = size or (self.resolution, self.resolution)
        width, height = image.size
        scale = max(target_w / width, target_h / height)  # the smallest that covers the target
        # The crop box in resized coordinates, then mapped back: resizing only the box
        # gives the same pixels as resizing everything and cropping, for less work.
        resized_w, resized_h = max(target_w, round(width * scale)), max(target_h, round(height * scale))
        left, top = self._offset(resized_w - target_w, generator), self._offset(resized_h - target_h, generator)
        x0, x1 = _inside(left / scale, (left + target_w) / scale, width)
        y0, y1 = _inside(top / scale, (top + target_h) / scale, height)
        # PIL's bicubic widens its kernel when downscaling: antialiased.
        image = image.resize((target_w, target_h), Image.Resampling.BICUBIC, box=(x0, y0, x1, y1))
        if self.flip and torch.rand((), generator=generator) < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            left = resized_w - target_w - left
        return to_tensor(image), (top, left)  # (3, H, W)

    def _offset(self, slack: int, generator: Optional[torch.Generator]) -> int:
        if self.crop == "center" or slack == 0:
            return slack // 2
        return int(torch.randint(0, slack + 1, (), generator=generator))


def _inside(start: float, end: float, limit: int) -> tuple[float, float]:
    """[start, end] moved back inside [0, limit]: rounding the covering size up (or float error)
    can put the far edge a fraction of a pixel outside the picture, which PIL refuses."""
    excess = max(0.0, end - limit)
    return max(0.0, start - excess), min(float(limit), end - excess)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> (3, H, W) float32 in [-1, 1] (ldm.images.from_pil for one image). The
    arithmetic is done in numpy: in the main process, torch's intra-op threads made this
    step 30x slower (40 ms per 256px image) on a 2-core machine."""
    channels_first = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))  # (3, H, W)
    return torch.from_numpy(channels_first.astype(np.float32) / np.float32(127.5) - np.float32(1.0))


def size_conditioning(decoded, crop_top_left: Size) -> dict[str, torch.Tensor]:
    """What every sample carries for SDXL's size conditioning: "original_size" [height, width]
    of the picture as decoded at full size (a ldm.data.decode.Decoded), "crop_top_left"
    [top, left], both (2,) long."""
    width, height = decoded.original_size or decoded.image.size
    return {
        "original_size": torch.tensor([height, width], dtype=torch.long),
        "crop_top_left": torch.tensor(crop_top_left, dtype=torch.long),
    }
