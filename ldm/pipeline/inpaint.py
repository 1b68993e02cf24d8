"""Inpainting and outpainting: the white part of a mask repainted, composited over the input.

A 4-channel (text-to-image) model gets the known region put back after every step; a
9-channel inpainting model reads the mask and the masked input as extra channels."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from PIL import Image

from ldm.control.prepare import crop_controls
from ldm.diffusion.inpainting import KnownRegion, inpaint_channels, latent_mask, masked_pixels
from ldm.images import from_pil, mask_from_pil, resized, work_size
from ldm.masks import Canvas, composite, crop_box, make_canvas
from ldm.pipeline.task import BatchContext, Plan, Start, input_pixels, refuse_upscaler, size_conditions
from ldm.settings import GenerationError, Limits, Settings, check_input_size, check_size

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline


class Inpaint:
    mode = "inpaint"

    def __init__(self, image: Image.Image, mask: Optional[Image.Image]):
        self.image = image
        self.mask = mask

    def draw_size(self, pipe: "Pipeline", settings: Settings) -> tuple[int, int]:
        """The canvas (the image grown by the pad) rounded to multiples of 8, or the requested
        width and height; with `crop_to_mask`, the requested size or the model's."""
        if settings.crop_to_mask is not None:
            return settings.width or pipe.default_size, settings.height or pipe.default_size
        width, height = self.image.size
        if settings.pad is not None:
            left, top, right, bottom = settings.pad
            width, height = width + left + right, height + top + bottom
        return work_size((width, height), settings.width, settings.height)

    def plan(self, pipe: "Pipeline", settings: Settings, limits: Limits, notes: list[str]) -> Plan:
        image, mask = self.image, self.mask
        refuse_upscaler(pipe)
        check_input_size(settings, self.mode, image.size, limits)
        if mask is None and settings.pad is None:
            raise GenerationError("inpainting needs a mask (or an outpainting pad)")
        if mask is not None and mask.size != image.size:
            notes.append("mask {}x{} resized to the image's {}x{}".format(*mask.size, *image.size))
        canvas = make_canvas(image, mask, settings.mask_blur, settings.pad)
        if canvas.is_empty:
            notes.append("mask is all black: nothing to repaint; the input is returned unchanged")
            return Plan(settings, canvas.image.size, canvas.image.size, start=None, unchanged=canvas.image)
        if canvas.is_full:
            notes.append("mask is all white: the whole image is repainted")
        return self.plan_region(pipe, settings, canvas, limits)

    def plan_region(self, pipe: "Pipeline", settings: Settings, canvas: Canvas, limits: Limits) -> Plan:
        """The region the model sees, at the size it works at: the whole canvas, or with
        `crop_to_mask` a crop around the mask at the model's size."""
        crop_to_mask, size = settings.crop_to_mask, self.draw_size(pipe, settings)
        box = (0, 0, *canvas.image.size)
        if crop_to_mask is not None:
            box = crop_box(canvas.repaint, crop_to_mask, size[0] / size[1])
        pixels = from_pil([resized(canvas.image.crop(box), size)])  # (1, 3, H, W)
        if settings.controls and (crop_to_mask is not None or settings.pad is not None):
            settings = settings.replace(controls=crop_controls(settings.controls, canvas.image.size, box))
        region_mask = mask_from_pil(canvas.repaint.crop(box).resize(size, Image.BILINEAR))  # (1, 1, H, W)
        # A 4-channel U-Net with nothing to keep is plain img2img (txt2img at strength 1).
        if canvas.is_full and not pipe.is_inpainting_model:
            region_mask = None
        check_size(*size, limits)
        strength = settings.strength_for(self.mode)

        def start(pipe: "Pipeline", generators: list[torch.Generator], batch: BatchContext) -> Start:
            return inpainting_start(pipe, generators, pixels, region_mask, strength, size)

        def finish(images: list[Image.Image]) -> list[Image.Image]:
            return [composite(each, canvas.image, canvas.feather, box) for each in images]

        return Plan(settings, size, canvas.image.size, start, strength, finish)


def inpainting_start(pipe: "Pipeline", generators, pixels, mask, strength: float, size: tuple[int, int]) -> Start:
    """The batch's start, its random draws in diffusers' order (input posterior, noise,
    masked-input posterior) so that a seed gives their image. `mask` (1, 1, H, W): 1 =
    repaint; None: nothing to keep (img2img). An SDXL model gets the drawn size as its size ids."""
    inpainting_model = pipe.is_inpainting_model
    vectors = size_conditions(pipe, size, len(generators))
    batch = input_pixels(pipe, pixels, len(generators))  # (B, 3, H, W)
    init_latents = None
    if strength < 1.0 or (mask is not None and not inpainting_model):
        init_latents = pipe.encode_images(batch, generators)  # (B, C, h, w)
    noise = pipe.noise(generators, *size)  # (B, C, h, w)
    if mask is None:
        return Start(noise, init_latents, read_input=True, vectors=vectors)
    mask = mask.to(device=noise.device, dtype=noise.dtype)
    small_mask = latent_mask(mask, noise.shape[-2:])  # (1, 1, h, w)
    if inpainting_model:
        masked_latents = pipe.encode_images(masked_pixels(batch, mask), generators)  # (B, C, h, w)
        concat = inpaint_channels(small_mask, masked_latents)  # (B, 1 + C, h, w)
        return Start(noise, init_latents, concat=concat, read_input=True, vectors=vectors, repaint_mask=small_mask)
    # diffusers encodes the masked input for 4-channel U-Nets too, and discards it: draw (and
    # discard) the same numbers, without the VAE pass.
    pipe.noise(generators, *size)
    known_region = KnownRegion(init_latents, small_mask)
    return Start(noise, init_latents, known_region=known_region, read_input=True, vectors=vectors, repaint_mask=small_mask)
