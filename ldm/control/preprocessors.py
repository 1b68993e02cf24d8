"""Control types by name: each turns a picture into the control image its ControlNet reads
(RGB, the picture's size). `raw`: the picture already is the control image."""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image

from ldm.control.units import CONTROL_TYPES
from ldm.control.layout_map import layout_image, layout_labels

# AUTOMATIC1111's ControlNet extension's defaults for its canny module.
CANNY_LOW, CANNY_HIGH = 100, 200


def canny(image: Image.Image) -> Image.Image:
    """White edges on black, by OpenCV's Canny on the grey picture."""
    import cv2

    grey = np.asarray(image.convert("L"))
    edges = cv2.Canny(grey, CANNY_LOW, CANNY_HIGH)  # (H, W) 0 or 255
    return Image.fromarray(edges).convert("RGB")


def layout(image: Image.Image) -> Image.Image:
    """A scenes layout map (ldm.scenes.layout), each pixel snapped to its nearest region
    colour: a map that was resized, blurred or saved as JPEG reads as drawn."""
    return layout_image(layout_labels(image))


def raw(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


PREPROCESSORS: dict[str, Callable[[Image.Image], Image.Image]] = {"canny": canny, "layout": layout, "raw": raw}
assert tuple(PREPROCESSORS) == CONTROL_TYPES  # units.py lists the names without importing this module


def control_image(control_type: str, picture: Image.Image) -> Image.Image:
    return PREPROCESSORS[control_type](picture)
