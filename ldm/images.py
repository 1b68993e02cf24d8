"""Image <-> tensor helpers. Pixels in tensors are (B, 3, H, W) in [-1, 1]; masks are
(B, 1, H, W) in {0, 1} with 1 = repaint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ldm.errors import LdmError

# Model sizes are whole latent cells: multiples of the KL-f8 autoencoder's 8 pixels.
SIZE_MULTIPLE = 8


class ImageError(LdmError, ValueError):
    """An input image that cannot be used; the message names the file and why, in one line."""


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


def mask_from_pil(mask: Image.Image) -> torch.Tensor:
    """An "L" mask -> (1, 1, H, W) float32, 1 where it is at least half white."""
    array = np.asarray(mask.convert("L")) >= 128  # (H, W); 128/255 is the first value >= 0.5
    return torch.from_numpy(array).to(torch.float32)[None, None]


def load_image(path: str | Path, what: str = "image") -> Image.Image:
    """Opens and decodes an image file (any mode, as stored); ImageError if it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{what} file not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not halfway through a run
            return image
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        reason = "not an image" if isinstance(error, UnidentifiedImageError) else f"unreadable ({error})"
        raise ImageError(f"{what} {path} is {reason}") from None


def round_to_multiple(value: float, multiple: int = SIZE_MULTIPLE) -> int:
    """The nearest multiple (halves round up, unlike Python's round), at least `multiple`."""
    return max(multiple, int(value / multiple + 0.5) * multiple)


def work_size(size: tuple[int, int], width: Optional[int] = None, height: Optional[int] = None) -> tuple[int, int]:
    """The size an image of `size` is processed at: `width` x `height` when given; a missing
    one keeps the image's aspect ratio; neither: the image's own size rounded to multiples of 8."""
    image_width, image_height = size
    if width and height:
        return width, height
    if width:
        return width, round_to_multiple(image_height * width / image_width)
    if height:
        return round_to_multiple(image_width * height / image_height), height
    return round_to_multiple(image_width), round_to_multiple(image_height)


def resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` at `size` (Lanczos; the same image when it already has that size)."""
    return image if image.size == tuple(size) else image.resize(size, Image.LANCZOS)
