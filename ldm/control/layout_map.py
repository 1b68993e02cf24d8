"""Layout maps: one flat colour per region of a scene (sky, ground, water, mountains, trees,
house, sun, moon; windmill for the concept scenes), the control image of the `layout` ControlNet. The scenes demo draws them
exactly (ldm.scenes.layout); here is only the colour code, so the preprocessor needs no demo."""

from __future__ import annotations

import numpy as np
from PIL import Image

# Index 0 is what nothing else covers. Clouds and stars are part of the sky.
REGIONS = ("sky", "ground", "water", "mountains", "tree", "house", "sun", "moon", "windmill")
# Far apart in RGB, so a resized or re-encoded map still snaps back to the right region.
COLOURS = {
    "sky": (80, 150, 255),
    "ground": (150, 100, 40),
    "water": (0, 40, 140),
    "mountains": (128, 128, 128),
    "tree": (0, 160, 0),
    "house": (230, 30, 30),
    "sun": (255, 230, 0),
    "moon": (255, 255, 255),
    "windmill": (200, 0, 200),  # only in scenes made with --concept windmill
}
PALETTE = np.array([COLOURS[name] for name in REGIONS], dtype=np.uint8)  # (regions, 3)


def layout_image(labels: np.ndarray) -> Image.Image:
    """(H, W) region indices -> an RGB map in COLOURS."""
    return Image.fromarray(PALETTE[labels])


def layout_labels(image: Image.Image) -> np.ndarray:
    """An RGB map -> (H, W) indices of the nearest region colour (undoes blur and resizing)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)  # (H, W, 3)
    distances = ((pixels[:, :, None, :] - PALETTE.astype(np.int32)) ** 2).sum(-1)  # (H, W, regions)
    return distances.argmin(-1).astype(np.uint8)
