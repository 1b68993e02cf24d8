"""upscale: a diffusion upscaler (Stable Diffusion's x4 upscaler, or one trained with
stage: upscaler) redraws a picture at its VAE's scale times the size.

The denoiser reads the latents (at the input's own size: the VAE's scale is the upscaling
factor) beside the input picture, noised to a noise level it is also told as a class label.
The random draws follow diffusers' StableDiffusionUpscalePipeline (the picture's noise, then
the latents'), so a seed gives its image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from PIL import Image

from ldm.config import UpscalerConfig
from ldm.diffusion.upscaling import NOISE_LEVEL, noised_picture
from ldm.images import from_pil
from ldm.pipeline.task import BatchContext, Plan, Start, input_pixels
from ldm.settings import GenerationError, Limits, Settings, check_input_size, check_size

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline

MIN_INPUT_SIDE = 8  # pixels: a smaller picture has too little for a denoiser to read
Box = tuple[int, int, int, int]  # left, top, right, bottom in the input's pixels


def require_upscaler(pipe: "Pipeline") -> UpscalerConfig:
    upscaler = pipe.components.upscaler
    if upscaler is None:
        raise GenerationError(f"model {pipe.components.name} is not an upscaler (its config has no upscaler section)")
    return upscaler


def chosen_noise_level(settings: Settings, upscaler: UpscalerConfig) -> int:
    """The request's noise level, else the model's default; GenerationError past the model's top."""
    level = upscaler.noise_level if settings.noise_level is None else settings.noise_level
    if not 0 <= level <= upscaler.max_noise_level:
        raise GenerationError(f"noise level must be between 0 and this model's max_noise_level {upscaler.max_noise_level}, got {level}")
    return level


def check_upscale_input(pipe: "Pipeline", settings: Settings, size: tuple[int, int], limits: Limits) -> tuple[int, int]:
    """The output size of upscaling a picture of `size`; GenerationError for a model that is
    not an upscaler, a picture too small, or an input or output past the limits."""
    require_upscaler(pipe)
    width, height = size
    if min(width, height) < MIN_INPUT_SIDE:
        raise GenerationError(f"input picture {width}x{height} is too small to upscale: at least {MIN_INPUT_SIDE} pixels a side")
    check_input_size(settings, Upscale.mode, size, limits)
    output = (width * pipe.vae_scale, height * pipe.vae_scale)
    check_size(*output, limits, f"upscaled image (x{pipe.vae_scale})")
    return output


class Upscale:
    """The picture (or, with `box`, one tile of it) upscaled. A tile's noise is the crop of
    the whole picture's, so that tiles agree with each other and with an untiled run."""

    mode = "upscale"

    def __init__(self, image: Image.Image, box: Optional[Box] = None):
        self.image = image
        self.box = box

    def plan(self, pipe: "Pipeline", settings: Settings, limits: Limits, notes: list[str]) -> Plan:
        upscaler = require_upscaler(pipe)
        check_upscale_input(pipe, settings, self.image.size, limits)
        level = chosen_noise_level(settings, upscaler)
        box = self.box or (0, 0, *self.image.size)
        size = ((box[2] - box[0]) * pipe.vae_scale, (box[3] - box[1]) * pipe.vae_scale)
        pixels = from_pil([self.image.convert("RGB")])  # (1, 3, h, w)

        def start(pipe: "Pipeline", generators: list[torch.Generator], batch: BatchContext) -> Start:
            return upscale_start(pipe, generators, pixels, upscaler, level, None if self.box is None else box)

        return Plan(settings.replace(noise_level=level), size, size, start)


def upscale_start(pipe: "Pipeline", generators, pixels, upscaler: UpscalerConfig, level: int, box: Optional[Box]) -> Start:
    """The batch's start: noise for the latents, the noised picture and its noise levels;
    with `box`, their crops to that tile (and the generators reseeded for the tile's steps)."""
    batch = input_pixels(pipe, pixels, len(generators))  # (B, 3, h, w)
    picture_noise = draw_noise(pipe, generators, batch.shape)  # first, as diffusers draws it
    noise = draw_noise(pipe, generators, (len(generators), pipe.components.vae.config.latent_channels, *batch.shape[-2:]))
    levels = torch.full((len(generators),), level, dtype=torch.long, device=batch.device)  # (B,)
    picture = noised_picture(upscaler, batch, picture_noise, levels)  # (B, 3, h, w)
    if box is not None:
        left, top, right, bottom = box
        picture, noise = picture[..., top:bottom, left:right], noise[..., top:bottom, left:right]
        reseed_for_tile(generators, box)
    return Start(noise, concat=picture, vectors={NOISE_LEVEL: levels}, read_input=True)


def draw_noise(pipe: "Pipeline", generators: list[torch.Generator], shape) -> torch.Tensor:
    """Unit-variance noise of `shape`, item k's from generator k (diffusers' randn_tensor)."""
    from diffusers.utils.torch_utils import randn_tensor

    return randn_tensor(tuple(shape), generator=generators, device=pipe.components.device, dtype=pipe.components.dtype)


def reseed_for_tile(generators: list[torch.Generator], box: Box) -> None:
    """Each tile's own stream for what samplers draw at every step (euler-a's noise): with
    one stream for all, every tile would get the same grain, a pattern repeating per tile."""
    for generator in generators:
        generator.manual_seed(hash((generator.initial_seed(), box)) % 2**63)
