"""img2img: from an input picture noised to the timestep the strength selects."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from PIL import Image

from ldm.images import from_pil, resized, work_size
from ldm.pipeline.task import BatchContext, Plan, Start, input_pixels, refuse_inpainting_model, size_conditions
from ldm.settings import Limits, Settings, check_input_size, check_size

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline


class Img2Img:
    mode = "img2img"

    def __init__(self, image: Image.Image):
        self.image = image

    def draw_size(self, pipe: "Pipeline", settings: Settings) -> tuple[int, int]:
        """The image's size rounded to multiples of 8, or the requested width and height."""
        return work_size(self.image.size, settings.width, settings.height)

    def plan(self, pipe: "Pipeline", settings: Settings, limits: Limits, notes: list[str]) -> Plan:
        image = self.image
        check_input_size(settings, self.mode, image.size, limits)
        size = self.draw_size(pipe, settings)
        check_size(*size, limits)
        refuse_inpainting_model(pipe)
        if size != image.size:
            notes.append("init image {}x{} resized to {}x{}".format(*image.size, *size))
        pixels = from_pil([resized(image.convert("RGB"), size)])  # (1, 3, H, W)
        strength = settings.strength_for(self.mode)

        def start(pipe: "Pipeline", generators: list[torch.Generator], batch: BatchContext) -> Start:
            # The input's posterior before the noise: diffusers' order of random draws.
            init_latents = None
            if strength < 1.0:
                init_latents = pipe.encode_images(input_pixels(pipe, pixels, len(generators)), generators)  # (B, C, h, w)
            vectors = size_conditions(pipe, size, len(generators))
            return Start(pipe.noise(generators, *size), init_latents, read_input=True, vectors=vectors)

        return Plan(settings, size, size, start, strength)
