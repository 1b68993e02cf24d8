"""An upscale's colours taken from its input: the upscaled picture keeps its own fine detail
(its high frequencies) over the input's broad colours (the input enlarged by bicubic, low-
passed), StableSR's colour correction for diffusion upscalers. What it mends: a small VAE's
colour drift over flat areas, which costs PSNR everywhere in a picture; what it keeps: the
edges and texture the model drew."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image

from ldm.images import from_pil, to_pil


def low_band(pixels: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) blurred by a Gaussian of `sigma` pixels (separable, edges reflected)."""
    radius = max(1, int(3 * sigma))
    taps = torch.exp(-((torch.arange(-radius, radius + 1, dtype=pixels.dtype) / sigma) ** 2) / 2)
    taps = (taps / taps.sum()).to(pixels.device)
    channels = pixels.shape[1]
    rows = F.conv2d(F.pad(pixels, (radius, radius, 0, 0), mode="reflect"), taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(F.pad(rows, (0, 0, radius, radius), mode="reflect"), taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)


def color_fixed(upscaled: Image.Image, source: Image.Image, sigma: float) -> Image.Image:
    """`upscaled` with the low band (Gaussian, `sigma` output pixels) of `source` enlarged to its size."""
    drawn = from_pil([upscaled.convert("RGB")])  # (1, 3, H, W) in [-1, 1]
    enlarged = F.interpolate(from_pil([source.convert("RGB")]), size=drawn.shape[-2:], mode="bicubic", align_corners=False)
    return to_pil((drawn - low_band(drawn, sigma) + low_band(enlarged, sigma)).clamp(-1, 1))[0]
