"""Low-resolution pictures made from high-resolution ones, as a super-resolution model is
trained on: downscale by the model's factor, then degrade (blur, pixel noise, JPEG), in the
order Real-ESRGAN applies them after its resize.

Every picture's degradation strengths are drawn uniformly from the configured ranges, from the
random draws the caller passes (the training step's: resumed and multi-process runs then
degrade alike). All draws are made whether a degradation is on or off, so switching one off
does not change the others'."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

Range = Optional[tuple[float, float]]  # (low, high), each picture drawn uniformly between; None: off


class Draws(Protocol):
    """The random draws degradations need (ldm.training.batches.Randomness is one)."""

    def rand(self, shape) -> torch.Tensor: ...

    def randn(self, shape) -> torch.Tensor: ...


def downscale(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, 3, H/f, W/f): antialiased bicubic, rounded to 8-bit levels
    (a low-resolution picture is an 8-bit image at sampling time, and cached ones are kept so)."""
    height, width = pixels.shape[-2:]
    small = F.interpolate(pixels.float(), size=(height // factor, width // factor), mode="bicubic", antialias=True, align_corners=False)
    return from_uint8(to_uint8(small))


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    return pixels.float() / 127.5 - 1.0


@dataclass(frozen=True)
class Degradations:
    blur: Range = None  # Gaussian blur sigma, in low-resolution pixels
    noise: Range = None  # Gaussian pixel noise std, in units of the full [0, 1] range
    jpeg_quality: Range = None  # JPEG quality (1-100), rounded to an integer

    def __call__(self, low: torch.Tensor, draws: Draws) -> torch.Tensor:
        """`low` (B, 3, h, w) in [-1, 1] degraded, each picture with its own strengths."""
        b = len(low)
        strengths = draws.rand((b, 3))  # (B, 3): blur, noise, quality, each in [0, 1)
        noise = draws.randn(low.shape).to(low)  # (B, 3, h, w)
        if self.blur is not None:
            low = gaussian_blur(low, _within(self.blur, strengths[:, 0]))
        if self.noise is not None:
            stds = _within(self.noise, strengths[:, 1]).to(low).view(b, 1, 1, 1)
            low = (low + 2 * stds * noise).clamp(-1, 1)  # x2: the [-1, 1] range is twice [0, 1]
        if self.jpeg_quality is not None:
            low = jpeg(low, _within(self.jpeg_quality, strengths[:, 2]).round().int().tolist())
        return low

    def describe(self) -> dict:
        return {"blur": self.blur, "noise": self.noise, "jpeg_quality": self.jpeg_quality}


def _within(bounds: tuple[float, float], unit: torch.Tensor) -> torch.Tensor:
    low, high = bounds
    return low + (high - low) * unit.float().cpu()


def gaussian_blur(pictures: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Each picture blurred with its own sigma (0: unchanged); edges reflected."""
    out = []
    for picture, sigma in zip(pictures, sigmas.tolist()):
        if sigma <= 0:
            out.append(picture)
            continue
        radius = max(1, math.ceil(3 * sigma))
        radius = min(radius, min(picture.shape[-2:]) - 1)
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
        kernel = (kernel / kernel.sum()).to(picture)
        x = F.pad(picture[None], (radius, radius, radius, radius), mode="reflect")  # (1, 3, h + 2r, w + 2r)
        x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)  # along the width
        x = F.conv2d(x, kernel.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)  # along the height
        out.append(x[0])
    return torch.stack(out)  # (B, 3, h, w)


def jpeg(pictures: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """Each picture through a JPEG encode and decode at its quality (PIL's encoder: deterministic)."""
    out = []
    for picture, quality in zip(pictures, qualities):
        array = to_uint8(picture).permute(1, 2, 0).cpu().numpy()  # (h, w, 3)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
        out.append(from_uint8(torch.from_numpy(decoded.copy()).permute(2, 0, 1)))
    return torch.stack(out).to(pictures)  # (B, 3, h, w)
