"""Classifier-free guidance: wraps the denoiser call; the model knows no guidance."""

from __future__ import annotations

from typing import Optional

import torch

from ldm.diffusion.conditioning import Conditioning, cat_conditions
from ldm.diffusion.conditioning_schedule import ConditioningSchedule, paired
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

    With scale <= 1 (or no unconditional conditioning) the unconditional pass is skipped:
    plain conditional output. The unconditional half shares the conditional one's image-side
    conditions (concatenated channels, named vectors) where it has none of its own. A
    guidance-distilled denoiser (one with a guidance-scale embedding, as LCM students have)
    gets the scale as that embedding instead: one conditional call, no unconditional pass. Its
    scale counts as diffusers' pipelines count it (w = scale - 1, LCM's own formulation).

    `scale` is one number for the batch (sampling's --cfg) or one per sample, a (B,) tensor
    (LCM training's teacher, whose scales are drawn per sample); a per-sample scale always
    makes both passes.

    `cond` and `uncond` may change during the run (ConditioningSchedule: prompt editing); call
    k is conditioned as the schedules say for model evaluation k.
    """

    def __init__(self, denoiser, cond: Conditioning | ConditioningSchedule, uncond: Optional[Conditioning | ConditioningSchedule],
                 scale: float | torch.Tensor):  # fmt: skip
        self.denoiser = denoiser
        cond = ConditioningSchedule.of(cond)
        per_sample = torch.is_tensor(scale)
        width = guidance_embedding_width(denoiser)
        if width is not None:
            scales = scale if per_sample else torch.full((len(cond),), float(scale), dtype=torch.float64)  # (B,)
            tokens = cond.first.tokens
            embedding = cfg_embedding(scales, width).to(tokens.device, tokens.dtype)  # (B, width)
            cond = cond.map(lambda each: each.with_vector("guidance_embedding", embedding))
        self.guided = width is None and uncond is not None and (per_sample or scale > 1.0)
        self.scale = scale[:, None, None, None] if per_sample else scale  # (B, 1, 1, 1) against (B, C, h, w)
        # Unconditional first, as diffusers orders them, so batched results match.
        if self.guided:
            cond = paired(ConditioningSchedule.of(uncond), cond, lambda u, c: cat_conditions([shared_with(u, c), c]))
        self.schedule = cond
        self.step = 0  # call k is model evaluation k of the run (one call per evaluation, as the loop makes)

    @property
    def cond(self) -> Conditioning:
        """The (guidance-batched) conditioning the next call uses."""
        return self.schedule.at(self.step)

    def __call__(self, latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        cond = self.cond
        self.step += 1
        if self.guided:
            if torch.is_tensor(timestep) and timestep.dim() > 0 and len(timestep) == len(latents):
                timestep = torch.cat([timestep, timestep])  # per-sample timesteps (B,) -> (2B,)
            latents = torch.cat([latents, latents])  # (2B, C, h, w)
        out = denoise_call(self.denoiser, latents, timestep, cond)
        if not self.guided:
            return out
        uncond, cond = out.chunk(2)
        return uncond + self.scale * (cond - uncond)


def shared_with(uncond: Conditioning, cond: Conditioning) -> Conditioning:
    """`uncond` with the image-side conditions of `cond` it does not set itself."""
    return uncond.replace(
        vectors={**cond.vectors, **uncond.vectors},
        concat=uncond.concat if uncond.concat is not None else cond.concat,
    )
