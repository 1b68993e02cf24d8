"""What a diffusion upscaler (Stable Diffusion's x4 upscaler) conditions on besides the text:
the low-resolution picture, noised by its own schedule to a noise level, and that level.

Sampling (ldm.pipeline.upscale) and training (stage: upscaler) both make the conditions here,
so the two cannot drift apart: the picture goes to Conditioning.concat (read beside the
latents, at their size) and the level to Conditioning.vectors["noise_level"] (the U-Net's
class label)."""

from __future__ import annotations

import torch

from ldm.config import UpscalerConfig
from ldm.diffusion.process import noise_process
from ldm.diffusion.schedule import scheduler_config

NOISE_LEVEL = "noise_level"  # the Conditioning vector the U-Net adapter reads as class labels


def noised_picture(upscaler: UpscalerConfig, pixels: torch.Tensor, noise: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """`pixels` (B, 3, h, w) in [-1, 1] noised with `noise` to the noise levels `levels` (B,)
    of the upscaler's low-resolution schedule (the forward process at those timesteps)."""
    process = noise_process(scheduler_config(upscaler.low_res_scheduler))
    return process.noised(pixels, noise, levels)  # (B, 3, h, w)

