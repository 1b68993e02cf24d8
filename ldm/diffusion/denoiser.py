"""One call contract for every denoiser: (latents, t, conditioning) -> prediction.

The sampling loop, guidance and the training stages call `denoise_call`; how each family
of denoiser takes its arguments is its backbone adapter's business (ldm.diffusion.backbones)."""

from __future__ import annotations

from typing import Optional

import torch

from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.conditioning import Conditioning


def denoise_call(model, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """The prediction (eps or v, per the schedule) for `latents` (B, C, h, w) at `timestep`
    (a scalar or (B,)) under `cond`; returns (B, C, h, w). `model` is a denoiser module or a
    backbone adapter (a ControlNet-steered one)."""
    return backbone_of(model)(latents, timestep, cond)


def guidance_embedding_width(model) -> Optional[int]:
    """The width of the guidance-scale embedding a guidance-distilled denoiser takes (an LCM
    student's); None for a denoiser that is guided the classic way."""
    return backbone_of(model).guidance_embedding_width
