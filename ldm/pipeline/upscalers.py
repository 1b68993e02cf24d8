"""The hires fix's upscalers by AUTOMATIC1111's names (ldm.hires.HIRES_UPSCALERS): each takes a
batch's clean latents (B, C, h, w) to the latents of a larger picture. The latent ones
interpolate the latents (A1111's "Latent" modes); the pixel ones decode, resize with PIL and
encode again. A model-based upscaler (a diffusion upscaler) is one more entry here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from PIL import Image

from ldm.images import from_pil, to_pil

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline

# (pipeline, latents (B, C, h, w), (width, height) in pixels, the images' generators) -> latents (B, C, H/8, W/8)
Upscaler = Callable[["Pipeline", torch.Tensor, tuple[int, int], list[torch.Generator]], torch.Tensor]


def latent_upscaler(mode: str, antialias: bool = False) -> Upscaler:
    """torch's interpolation of the latents themselves: no VAE pass, softer detail."""

    def upscale(pipe: "Pipeline", latents: torch.Tensor, size: tuple[int, int], generators: list[torch.Generator]) -> torch.Tensor:
        width, height = size
        cells = (height // pipe.vae_scale, width // pipe.vae_scale)
        return F.interpolate(latents, size=cells, mode=mode, antialias=antialias)  # (B, C, H/8, W/8)

    return upscale


def pixel_upscaler(resample: int) -> Upscaler:
    """Decoded to 8-bit pictures, resized by PIL, encoded again, sampled from the posterior with
    the generators: what image-to-image on the resized picture would start from."""

    def upscale(pipe: "Pipeline", latents: torch.Tensor, size: tuple[int, int], generators: list[torch.Generator]) -> torch.Tensor:
        pictures = [picture.resize(size, resample) for picture in to_pil(pipe.decode(latents))]
        return pipe.encode_images(from_pil(pictures), generators)  # (B, C, H/8, W/8)

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
