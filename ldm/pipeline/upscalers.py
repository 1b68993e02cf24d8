"""The hires fix's upscalers by AUTOMATIC1111's names (ldm.hires.HIRES_UPSCALERS): each takes a
batch's clean latents (B, C, h, w) to the latents of a larger picture. The latent ones
interpolate the latents (A1111's "Latent" modes); the pixel ones decode, resize with PIL and
encode again; an upscaler model (a diffusion upscaler: a built-in name or a folder) decodes,
redraws each picture with the batch's prompt and seeds, resizes and encodes (`upscaler_for`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from PIL import Image

from ldm.builtin_models import resolve_model
from ldm.hires import is_model_upscaler
from ldm.images import from_pil, to_pil
from ldm.lora.refs import without_lora_tags
from ldm.pipeline.task import BatchContext
from ldm.settings import Settings

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline

# (pipeline, latents (B, C, h, w), (width, height) in pixels, the images' generators, the batch:
# its prompt and seeds) -> latents (B, C, H/8, W/8)
Upscaler = Callable[["Pipeline", torch.Tensor, tuple[int, int], list[torch.Generator], BatchContext], torch.Tensor]


def latent_upscaler(mode: str, antialias: bool = False) -> Upscaler:
    """torch's interpolation of the latents themselves: no VAE pass, softer detail."""

    def upscale(pipe: "Pipeline", latents: torch.Tensor, size: tuple[int, int], generators: list[torch.Generator], batch: BatchContext) -> torch.Tensor:
        width, height = size
        cells = (height // pipe.vae_scale, width // pipe.vae_scale)
        return F.interpolate(latents, size=cells, mode=mode, antialias=antialias)  # (B, C, H/8, W/8)

    return upscale


def through_pictures(
    pipe: "Pipeline", latents: torch.Tensor, generators: list[torch.Generator], change: Callable[[list[Image.Image]], list[Image.Image]]
) -> torch.Tensor:
    """Latents decoded to 8-bit pictures, `change`d, encoded again, sampled from the posterior
    with the generators: what image-to-image on the changed pictures would start from."""
    return pipe.encode_images(from_pil(change(to_pil(pipe.decode(latents)))), generators)  # (B, C, H/8, W/8)


def pixel_upscaler(resample: int) -> Upscaler:
    """The pictures resized by PIL."""

    def upscale(pipe: "Pipeline", latents: torch.Tensor, size: tuple[int, int], generators: list[torch.Generator], batch: BatchContext) -> torch.Tensor:
        return through_pictures(pipe, latents, generators, lambda pictures: [p.resize(size, resample) for p in pictures])

    return upscale


UPSCALERS: dict[str, Upscaler] = {
    "Latent": latent_upscaler("bilinear"),
    "Latent (antialiased)": latent_upscaler("bilinear", antialias=True),
    "Latent (bicubic)": latent_upscaler("bicubic"),
    "Latent (bicubic antialiased)": latent_upscaler("bicubic", antialias=True),
    "Latent (nearest)": latent_upscaler("nearest"),
    "Latent (nearest-exact)": latent_upscaler("nearest-exact"),
    "Lanczos": pixel_upscaler(Image.LANCZOS),
    "Nearest": pixel_upscaler(Image.NEAREST),
    "None": pixel_upscaler(Image.LANCZOS),  # A1111: no upscaler model, the picture resized
}


@lru_cache(maxsize=1)
def loaded_upscaler(pipeline_class: type, path: Path, device: str, dtype: torch.dtype) -> "Pipeline":
    """The upscaler model at `path`, loaded once for the batches (and requests) that follow;
    a new path, device or dtype replaces it. (The class: the pipeline's layer is above this one.)"""
    return pipeline_class.load(path, device=device, dtype=dtype)


def model_upscaler(name: str) -> Upscaler:
    """A diffusion upscaler (ldm.pipeline.upscale) on each decoded picture with the batch's prompt,
    negative prompt and the picture's seed, its own steps and noise level; resized to the size
    (Lanczos), encoded with the generators as a pixel upscaler's pictures are."""

    def upscale(pipe: "Pipeline", latents: torch.Tensor, size: tuple[int, int], generators: list[torch.Generator], batch: BatchContext) -> torch.Tensor:
        components = pipe.components
        upscaler = loaded_upscaler(type(pipe), resolve_model(name), str(components.device), components.dtype)
        first = batch.settings

        def redraw(picture: Image.Image, seed: int) -> Image.Image:
            request = Settings(prompt=without_lora_tags(first.prompt), negative=first.negative, seed=seed)
            one = upscaler.upscale(request, picture, progress=batch.progress)
            batch.notes += [f"hires upscaler: {note}" for note in one.notes if f"hires upscaler: {note}" not in batch.notes]
            return one.images[0].resize(size, Image.LANCZOS)

        return through_pictures(pipe, latents, generators, lambda pictures: [redraw(p, s) for p, s in zip(pictures, batch.seeds)])

    return upscale


def upscaler_for(name: str) -> Upscaler:
    """The hires upscaler of A1111's `name`, or the upscaler model `name` names."""
    return model_upscaler(name) if is_model_upscaler(name) else UPSCALERS[name]
