"""Classifier-free guidance: wraps the U-Net call; the model knows no guidance."""

from __future__ import annotations

from typing import Optional

import torch


class GuidedModel:
    """eps (or v) = uncond + scale * (cond - uncond), both from one batched U-Net call.

    `context` and `uncond_context` are (B, L, D) text embeddings. With scale <= 1 (or no
    unconditional context) the unconditional pass is skipped: plain conditional output.
    """

    def __init__(self, unet, context: torch.Tensor, uncond_context: Optional[torch.Tensor], scale: float):
        self.unet = unet
        self.scale = scale
        self.guided = uncond_context is not None and scale > 1.0
        # Unconditional first, as diffusers orders them, so batched results match.
        self.context = torch.cat([uncond_context, context]) if self.guided else context

    def __call__(self, model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        if self.guided:
            model_input = torch.cat([model_input, model_input])  # (2B, C, h, w)
        out = self.unet(model_input, timestep, encoder_hidden_states=self.context, return_dict=False)[0]
        if not self.guided:
            return out
        uncond, cond = out.chunk(2)
        return uncond + self.scale * (cond - uncond)
