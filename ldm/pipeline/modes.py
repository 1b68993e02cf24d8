"""Every generation mode's task, by the mode's name (ldm.settings.MODES)."""

from __future__ import annotations

from typing import Optional

from PIL import Image

from ldm.pipeline.hires import HiresFix
from ldm.pipeline.img2img import Img2Img
from ldm.pipeline.inpaint import Inpaint
from ldm.pipeline.task import Task
from ldm.pipeline.txt2img import Txt2Img
from ldm.settings import Settings
from ldm.pipeline.upscale import Upscale


def task_for(mode: str, image: Optional[Image.Image] = None, mask: Optional[Image.Image] = None, settings: Optional[Settings] = None) -> Task:
    """The task of `mode` on its inputs (an edit's image, inpainting's mask); txt2img with the
    hires fix when `settings` ask for it."""
    if mode == Txt2Img.mode:
        return HiresFix() if settings is not None and settings.hires_fix else Txt2Img()
    if mode == Img2Img.mode:
        return Img2Img(image)
    if mode == Inpaint.mode:
        return Inpaint(image, mask)
    if mode == Upscale.mode:
        return Upscale(image)
    raise ValueError(f"not a generation mode: {mode!r}")
