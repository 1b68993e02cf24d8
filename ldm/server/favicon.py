"""The icon browsers ask every page's server for (/favicon.ico), drawn here rather than shipped
as a binary: a sun over a lake, 32x32."""

from __future__ import annotations

import io
from functools import lru_cache

from PIL import Image, ImageDraw


@lru_cache(maxsize=1)
def favicon_ico() -> bytes:
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle([0, 0, 31, 31], radius=6, fill=(40, 110, 160, 255))  # lake
    draw.rounded_rectangle([0, 0, 31, 20], radius=6, fill=(32, 48, 96, 255), corners=(True, True, False, False))  # sky
    draw.ellipse([9, 6, 23, 20], fill=(250, 190, 60, 255))  # sun
    buffer = io.BytesIO()
    image.save(buffer, format="ICO", sizes=[(32, 32)])
    return buffer.getvalue()
