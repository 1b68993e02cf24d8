"""Inpainting masks and canvases in pixel space (PIL): white = repaint, black = keep.

A mask is read from any image mode, blurred (optionally) and thresholded at 0.5 into the
region the model repaints; that region blurred again is the feather through which the
result is composited over the input, so pixels beyond the feather are the input's exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageFilter

from ldm.images import resized
from ldm.settings import Pad

Box = tuple[int, int, int, int]  # left, top, right, bottom (PIL's crop box)

# 16-bit grey images hold 0..65535; PIL's own conversion to 8 bits clips instead of scaling.
_WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def as_mask(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Any image -> an "L" mask of `size`. Transparent pixels count as black (keep): a mask
    painted in white on a transparent layer means what it shows."""
    if image.mode in _WIDE_GREY_MODES:
        grey = np.asarray(image, dtype=np.float64) / 257.0  # 65535 -> 255
        image = Image.fromarray(grey.clip(0, 255).round().astype(np.uint8))
    rgba = image.convert("RGBA")
    mask = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("L")
    return mask if mask.size == tuple(size) else mask.resize(size, Image.BILINEAR)


def blurred(mask: Image.Image, radius: float) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur(radius)) if radius > 0 else mask


@dataclass
class Canvas:
    """What inpainting works on and composites over."""

    image: Image.Image  # RGB: the input (grown by the outpainting pad)
    repaint: Image.Image  # "L", 0 or 255: the region the model repaints
    feather: Image.Image  # "L", 0..255: the weight of the result when compositing

    @property
    def is_empty(self) -> bool:
        return self.repaint.getbbox() is None

    @property
    def is_full(self) -> bool:
        return self.repaint.getextrema()[0] == 255


def make_canvas(image: Image.Image, mask: Optional[Image.Image], blur: float = 0, pad: Optional[Pad] = None) -> Canvas:
    """`mask` (any mode, resized to the image; None: keep all) blurred by `blur` pixels
    (Gaussian sigma) and thresholded at 0.5; with `pad`, image and mask grown by it."""
    image = image.convert("RGB")
    mask = as_mask(mask, image.size) if mask is not None else Image.new("L", image.size, 0)
    if pad is not None:
        image, mask = extend_canvas(image, mask, pad)
    repaint = blurred(mask, blur).point(lambda value: 255 if value >= 128 else 0)
    return Canvas(image=image, repaint=repaint, feather=blurred(repaint, blur))


def crop_box(repaint: Image.Image, padding: int, aspect: float) -> Box:
    """The box around the repainted region, grown by `padding` pixels on every side and then
    to the aspect ratio `aspect` (width / height) of the size it will be inpainted at, kept
    within the image (where the image is too small for that ratio, the crop is squeezed)."""
    left, top, right, bottom = repaint.getbbox()
    image_width, image_height = repaint.size
    left, top = max(left - padding, 0), max(top - padding, 0)
    right, bottom = min(right + padding, image_width), min(bottom + padding, image_height)
    width, height = right - left, bottom - top
    if width / height < aspect:
        width = min(round(height * aspect), image_width)
    else:
        height = min(round(width / aspect), image_height)
    left, right = _grown(left, right, width, image_width)
    top, bottom = _grown(top, bottom, height, image_height)
    return left, top, right, bottom


def _grown(start: int, end: int, length: int, limit: int) -> tuple[int, int]:
    """[start, end) grown to `length` about its centre, shifted to lie within [0, limit)."""
    start -= (length - (end - start)) // 2
    start = min(max(start, 0), limit - length)
    return start, start + length


def extend_canvas(image: Image.Image, mask: Image.Image, pad: Pad) -> tuple[Image.Image, Image.Image]:
    """Outpainting: `image` and `mask` grown by `pad`. The new border is white (repaint) in
    the mask and filled with the image's edge pixels (what strength < 1 starts from)."""
    left, top, right, bottom = pad
    array = np.asarray(image.convert("RGB"))  # (H, W, 3)
    grown = np.pad(array, ((top, bottom), (left, right), (0, 0)), mode="edge")  # (H + t + b, W + l + r, 3)
    canvas = Image.fromarray(grown)
    grown_mask = Image.new("L", canvas.size, 255)
    grown_mask.paste(mask, (left, top))
    return canvas, grown_mask


def composite(result: Image.Image, original: Image.Image, feather: Image.Image, box: Box) -> Image.Image:
    """`result` (inpainted at any size) resized into `box` of `original` and blended through
    `feather`; where the feather is 0 the pixels are exactly the original's."""
    left, top, right, bottom = box
    pasted = original.copy()
    pasted.paste(resized(result, (right - left, bottom - top)), (left, top))
    return Image.composite(pasted, original, feather)
