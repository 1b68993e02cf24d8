"""Classifier-free guidance: wraps the denoiser call; the model knows no guidance."""

from __future__ import annotations

from typing import Optional

import torch

from ldm.diffusion.denoiser import denoise_call


class GuidedModel:
    """eps (or v) = uncond + scale * (cond - uncond), both from one batched denoiser call.

    `context` and `uncond_context` are (B, L, D) text embeddings, with optional (B, L) token
    masks. With scale <= 1 (or no unconditional context) the unconditional pass is skipped:
    plain conditional output.
    """

    def __init__(
        self,
        denoiser,
        context: torch.Tensor,
        uncond_context: Optional[torch.Tensor],
        scale: float,
        mask: Optional[torch.Tensor] = None,
        uncond_mask: Optional[torch.Tensor] = None,
    ):
        self.denoiser = denoiser
        self.scale = scale
        self.guided = uncond_context is not None and scale > 1.0
        # Unconditional first, as diffusers orders them, so batched results match.
        self.context = torch.cat([uncond_context, context]) if self.guided else context
        self.mask = mask
        if self.guided and mask is not None:
            self.mask = torch.cat([uncond_mask if uncond_mask is not None else torch.ones_like(mask), mask])

    def __call__(self, model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        if self.guided:
            model_input = torch.cat([model_input, model_input])  # (2B, C, h, w)
        out = denoise_call(self.denoiser, model_input, timestep, self.context, self.mask)
        if not self.guided:
            return out
        uncond, cond = out.chunk(2)
        return uncond + self.scale * (cond - uncond)
