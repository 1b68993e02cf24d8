"""Classifier-free guidance: wraps the denoiser call; the model knows no guidance."""

from __future__ import annotations

from typing import Optional

import torch

from ldm.diffusion.denoiser import denoise_call, guidance_embedding_width


def guidance_scale_embedding(scale: torch.Tensor, width: int) -> torch.Tensor:
    """Sinusoidal features (B, width) of guidance scales (B,), scaled by 1000 as timesteps are:
    what a guidance-distilled (LCM) U-Net adds to its timestep embedding (the VDM formula
    diffusers' LatentConsistencyModelPipeline uses)."""
    half = width // 2
    device, scale = scale.device, scale.detach().cpu()  # on the CPU, as diffusers' pipeline computes it
    # In float32 throughout, as diffusers computes it: an ulp at angles of thousands shows.
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    frequencies = torch.exp(torch.arange(half, dtype=torch.float32) * -step)  # (half,)
    angles = (scale.float() * 1000.0)[:, None] * frequencies[None, :]  # (B, half)
    features = torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, 2 * half)
    return torch.nn.functional.pad(features, (0, width % 2)).to(device)  # (B, width)


def cfg_embedding(cfg: torch.Tensor, width: int) -> torch.Tensor:
    """The embedding (B, width) a guidance-distilled (LCM) denoiser reads for --cfg scales `cfg`
    (B,): LCM's w = cfg - 1 (uncond + cfg (cond - uncond) is cond + w (cond - uncond)), as
    diffusers' LatentConsistencyModelPipeline embeds it. Sampling (GuidedModel) and LCM
    training (ldm.training.lcm_stage) both call this, so the two cannot drift apart."""
    w = cfg.detach().cpu().double() - 1.0  # rounded to float32 once, as diffusers rounds float(cfg) - 1 (no float64 on MPS: CPU)
    return guidance_scale_embedding(w, width).to(cfg.device)


class GuidedModel:
    """eps (or v) = uncond + scale * (cond - uncond), both from one batched denoiser call.

    `context` and `uncond_context` are (B, L, D) text embeddings, with optional (B, L) token
    masks. With scale <= 1 (or no unconditional context) the unconditional pass is skipped:
    plain conditional output. A guidance-distilled denoiser (one with a guidance-scale
    embedding, as LCM students have) gets the scale as that embedding instead: one
    conditional call, no unconditional pass. Its scale counts as diffusers' pipelines count
    it (w = scale - 1, LCM's own formulation).
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
        width = guidance_embedding_width(denoiser)
        self.timestep_cond = None
        if width is not None:
            scales = torch.full((len(context),), float(scale), dtype=torch.float64)  # (B,)
            self.timestep_cond = cfg_embedding(scales, width).to(context.device, context.dtype)  # (B, width)
        self.guided = width is None and uncond_context is not None and scale > 1.0
        # Unconditional first, as diffusers orders them, so batched results match.
        self.context = torch.cat([uncond_context, context]) if self.guided else context
        self.mask = mask
        if self.guided and mask is not None:
            self.mask = torch.cat([uncond_mask if uncond_mask is not None else torch.ones_like(mask), mask])

    def __call__(self, model_input: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        if self.guided:
            model_input = torch.cat([model_input, model_input])  # (2B, C, h, w)
        out = denoise_call(self.denoiser, model_input, timestep, self.context, self.mask, self.timestep_cond)
        if not self.guided:
            return out
        uncond, cond = out.chunk(2)
        return uncond + self.scale * (cond - uncond)
