"""Layout maps of scenes, the control images of the `layout` ControlNet. The regions come
from the drawing itself (ldm.scenes.draw.draw_scene_with_layout), so a map is exact, not
estimated; the colour code is ldm.control.layout_map's."""

from __future__ import annotations

from PIL import Image

from ldm.control.layout_map import COLOURS, REGIONS, layout_image, layout_labels
from ldm.scenes.draw import draw_scene_with_layout
from ldm.scenes.generator import scene_attributes

__all__ = ["COLOURS", "REGIONS", "layout_image", "layout_labels", "scene_layout"]


def scene_layout(seed: int, size: int = 128, split: str = "all") -> tuple[Image.Image, Image.Image]:
    """make_scene(seed, size, split)'s image and its layout map."""
    scene, labels = draw_scene_with_layout(scene_attributes(seed, split), seed, size)
    return scene, layout_image(labels)
