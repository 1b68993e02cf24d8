"""Inpainting in latent space: the two ways a U-Net is told what to keep.

4-channel U-Nets (text-to-image models) know nothing of masks: after every step the known
region of the latents is put back, the input's latents noised to the level of the next
step (clean after the last), as diffusers' StableDiffusionInpaintPipeline does.
9-channel inpainting U-Nets (SD2-inpainting) take the mask and the masked image's latents
as extra input channels at every step; nothing is put back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ldm.diffusion.samplers import Sampler


@dataclass
class KnownRegion:
    latents: torch.Tensor  # (B, C, h, w) the input's clean scaled latents
    mask: torch.Tensor  # (B or 1, 1, h, w): 1 = repaint, 0 = keep


def latent_mask(mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) pixel mask -> (B, 1, h, w), nearest neighbour (what inpainting U-Nets saw in training)."""
    return F.interpolate(mask, size=latent_size)


def masked_pixels(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The input with the region to repaint blanked to 0 (mid grey): what a 9-channel U-Net may see."""
    return pixels * (mask < 0.5)  # (B, 3, H, W)


def inpaint_channels(mask: torch.Tensor, masked_image_latents: torch.Tensor) -> torch.Tensor:
    """The extra input of a 9-channel U-Net, after the C latent channels."""
    mask = mask.expand(len(masked_image_latents), -1, -1, -1)
    return torch.cat([mask, masked_image_latents], dim=1)  # (B, 1 + C, h, w)


def keep_known_region(
    known: KnownRegion, noise: torch.Tensor, sampler: Sampler, timesteps: torch.Tensor
) -> Callable[[int, torch.Tensor], torch.Tensor]:
    """An `after_step` for the denoising loop: the known region replaced after step i by the
    input noised by `sampler` (with the starting `noise`) to timesteps[i + 1]."""
    last = len(timesteps) - 1

    def after_step(i: int, latents: torch.Tensor) -> torch.Tensor:
        target = known.latents
        if i < last:
            target = sampler.renoise(known.latents, noise, timesteps[i + 1 : i + 2])
        return (1 - known.mask) * target + known.mask * latents  # (B, C, h, w)

    return after_step
