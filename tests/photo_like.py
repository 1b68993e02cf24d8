"""Generated pictures that perceptual hashes read as photos do: a smooth background with a
few coloured shapes, different for each seed (random noise would not survive resizing)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw


def picture(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    rng = np.random.default_rng(seed)
    width, height = size
    ramp = np.linspace(0, 1, width)[None, :, None] * rng.uniform(-120, 120, 3) + rng.uniform(60, 190, 3)
    image = Image.fromarray(np.clip(np.broadcast_to(ramp, (height, width, 3)), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x, y = rng.uniform(0, width * 0.7), rng.uniform(0, height * 0.7)
        w, h = rng.uniform(width * 0.15, width * 0.5), rng.uniform(height * 0.15, height * 0.5)
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
