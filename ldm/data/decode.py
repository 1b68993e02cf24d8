"""Robust image decoding: bytes or a file -> 8-bit RGB PIL image, or a reason to skip it.

Training must never die on one bad file, so every failure becomes a skip reason:
  unreadable   not an image PIL can open or decode (corrupt header, wrong format, ...)
  truncated    the file ends before the pixel data does (LOAD_TRUNCATED_IMAGES stays off:
               a half-grey image is worse than no image)
  too small    shorter side below `min_size`. Skipped, not upsampled: blurry upscaled
               images teach the model blur.
  too large    more pixels than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS,
               about 89 megapixels), checked from the header before decoding
Images in other modes are converted and the conversion is reported: CMYK, greyscale
(1, L, LA), palette (P, PA), alpha (RGBA, composited on white, as most viewers show
it), 16-bit (I;16*, I: scaled by 255/65535, not clipped), float (F) and other colour spaces.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageOps

ImageSource = Union[bytes, str, Path]

# What PIL raises on bad files (plugins raise more than OSError on fuzzed input).
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    TypeError,
    IndexError,
    KeyError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
ALPHA_BACKGROUND = (255, 255, 255)
EXIF_ORIENTATION = 0x0112


@dataclass
class Decoded:
    image: Optional[Image.Image] = None  # 8-bit RGB, None when skipped
    converted: Optional[str] = None  # a stats.CONVERSIONS reason
    skipped: Optional[str] = None  # a stats.SKIP_REASONS reason
    original_size: Optional[tuple[int, int]] = None  # (width, height) of the file as viewers show it, before any draft


def decode_image(source: ImageSource, min_size: int = 0, draft: int = 0) -> Decoded:
    """Decodes `source` (encoded bytes or a path) to 8-bit RGB, or says why it is skipped.

    Images whose shorter side is below `min_size` are skipped (never upsampled). JPEGs are
    decoded at the smallest DCT scale that keeps the shorter side at least `min_size` (or
    `draft`, when larger: a small preview is enough), which makes large photos several
    times cheaper to decode."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return Decoded(skipped="too large")
    except DECODE_ERRORS:
        return Decoded(skipped="unreadable")
    with image:  # closes the file whatever happens
        width, height = image.size
        original = _shown_size(image)
        if min(width, height) < min_size:
            return Decoded(skipped="too small")
        if image.format == "JPEG" and max(min_size, draft) > 0:
            scale = max(min_size, draft) / min(width, height)
            image.draft(image.mode, (math.ceil(width * scale), math.ceil(height * scale)))
        try:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # camera rotation, as viewers show it
            decoded = _to_rgb(image)
            decoded.original_size = original
            return decoded
        except DECODE_ERRORS as error:
            return Decoded(skipped="truncated" if "truncated" in str(error) else "unreadable")


def read_size(source: ImageSource) -> tuple[Optional[tuple[int, int]], Optional[str]]:
    """((width, height) as viewers show it, None) from the header alone, or (None, the skip
    reason decode_image would give: unreadable, too large): no pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                return _shown_size(image), None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None, "too large"
    except DECODE_ERRORS:
        return None, "unreadable"


def _shown_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) after the EXIF rotation that exif_transpose applies (orientations 5-8
    turn the picture a quarter)."""
    width, height = image.size
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION)
    except DECODE_ERRORS:
        orientation = None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _to_rgb(image: Image.Image) -> Decoded:
    mode = image.mode
    if mode == "RGB":
        return Decoded(image)
    if mode == "CMYK":
        return Decoded(image.convert("RGB"), "CMYK->RGB")
    if mode.startswith("I"):  # I;16, I;16B, I;16L, and I (how PIL once read 16-bit PNGs)
        return Decoded(_scaled_to_8bit(image, 65535), "16-bit->8-bit")
    if mode == "F":  # taken as 0..255, as PIL's own F -> L conversion does
        return Decoded(_scaled_to_8bit(image, 255), "float->8-bit")
    if mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        reason = {"L": "greyscale->RGB", "P": "palette->RGB"}.get(mode[0], "RGBA->RGB")
        return Decoded(_on_background(image), reason)
    if mode in ("1", "L"):
        return Decoded(image.convert("RGB"), "greyscale->RGB")
    if mode == "P":
        return Decoded(image.convert("RGB"), "palette->RGB")
    return Decoded(image.convert("RGB"), "colour space->RGB")  # YCbCr, LAB, HSV, RGBX


def _scaled_to_8bit(image: Image.Image, full_scale: float) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)  # (H, W)
    grey = np.clip(np.round(array * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")


def _on_background(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")
