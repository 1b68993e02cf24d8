"""Helpers that write tiny images with PIL; each test builds the data it reads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ldm.data.config import DataConfig

RESOLUTION = 16


def noise_image(width: int = 24, height: int = 20, seed: int = 0) -> Image.Image:
    """An RGB image of random pixels (so that crops and flips show)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def write_image(path: Path, image: Image.Image, format: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded(image, format or {"jpg": "JPEG", "png": "PNG"}[path.suffix[1:]]))
    return path


def messy_images() -> dict[str, tuple[bytes, str | None, str | None]]:
    """name -> (file bytes, expected conversion, expected skip reason)."""
    good = noise_image(seed=1)
    png = encoded(noise_image(seed=2), "PNG")
    jpeg = encoded(noise_image(seed=3), "JPEG")
    transparent = np.zeros((20, 24, 4), dtype=np.uint8)  # fully transparent black
    sixteen_bit = Image.fromarray(np.full((20, 24), 65535, dtype=np.uint16))  # I;16, full white
    return {
        "good.jpg": (encoded(good, "JPEG"), None, None),
        "corrupt.jpg": (jpeg[:20] + b"\x00" * 64 + jpeg[84:], None, "unreadable"),
        "truncated.png": (png[: len(png) // 2], None, "truncated"),
        "cmyk.jpg": (encoded(good.convert("CMYK"), "JPEG"), "CMYK->RGB", None),
        "grey.png": (encoded(good.convert("L"), "PNG"), "greyscale->RGB", None),
        "alpha.png": (encoded(Image.fromarray(transparent, "RGBA"), "PNG"), "RGBA->RGB", None),
        "sixteen.png": (encoded(sixteen_bit, "PNG"), "16-bit->8-bit", None),
        "tiny.png": (encoded(noise_image(8, 30), "PNG"), None, "too small"),
    }


def folder_config(path: Path, **overrides) -> DataConfig:
    settings = {"path": str(path), "resolution": RESOLUTION, "caption_dropout": 0.0}
    return DataConfig(**{**settings, **overrides})


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
