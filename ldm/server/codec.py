"""Images in JSON: base64 PNG out (with their parameters), base64 of any image format in."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Optional

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from ldm.settings import GenerationError


def png_base64(image: Image.Image, info: Optional[PngImagePlugin.PngInfo] = None) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_image(text: str, what: str, max_pixels: int) -> Image.Image:
    """A base64 image (optionally a data: URL, as browsers and A1111 clients send) -> a decoded
    PIL image; GenerationError naming `what` when it is not one or is larger than `max_pixels`."""
    if not isinstance(text, str):
        raise GenerationError(f"{what} must be a base64 string")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise GenerationError(f"{what} is not valid base64") from None
    try:
        image = Image.open(io.BytesIO(data))
        # Check the size from the header, before decoding: a small file can hold a huge image.
        if image.width * image.height > max_pixels:
            raise GenerationError(
                f"{what} is {image.width}x{image.height}, over the limit of {max_pixels / 1e6:.1f} megapixels"
            )
        image.load()
    except GenerationError:
        raise
    except UnidentifiedImageError:
        raise GenerationError(f"{what} is not an image") from None
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as error:
        raise GenerationError(f"{what} is an unreadable image ({error})") from None
    return image


def mask_image(image: Image.Image, invert: bool) -> Image.Image:
    """A1111's reading of a mask: the alpha channel when it has transparency, else the grey
    levels; white repaints (black with `invert`)."""
    if image.mode in ("RGBA", "LA") and image.getchannel("A").getextrema()[0] < 255:
        mask = image.getchannel("A")
    else:
        mask = image.convert("L")
    return mask.point(lambda value: 255 - value) if invert else mask
