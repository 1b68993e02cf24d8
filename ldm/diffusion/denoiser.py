"""One call contract for every denoiser: (latents, t, conditioning) -> prediction.

The sampling loop, guidance and the training stages call `denoise_call`; only this module
knows that diffusers' U-Net and PixArt transformer take their arguments differently."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ldm.diffusion.conditioning import Conditioning

BACKBONES = {"UNet2DConditionModel": "unet", "PixArtTransformer2DModel": "dit"}


def backbone(model: nn.Module) -> str:
    """'unet' or 'dit' for a denoiser module (matched by class name: no diffusers import); a
    wrapper that takes a backbone's call (a ControlNet-steered U-Net) says so in `backbone`."""
    compiled = getattr(model, "_orig_mod", None)  # torch.compile's wrapper: the module it runs
    name = getattr(model, "backbone", None) or BACKBONES.get(type(compiled if compiled is not None else model).__name__)
    if name is None:
        raise TypeError(f"not a known denoiser: {type(model).__name__}")
    return name


def learned_sigma(model: nn.Module) -> bool:
    """PixArt with learned variance predicts 2C channels for C latent channels (the input has
    C, or 2C + 1 for inpainting); the first C are the eps / v prediction."""
    config = model.config
    predicted = config.out_channels // 2
    return config.out_channels % 2 == 0 and predicted in (config.in_channels, (config.in_channels - 1) // 2)


def guidance_embedding_width(model: nn.Module) -> Optional[int]:
    """The width of the guidance-scale embedding a guidance-distilled U-Net takes (its
    config's `time_cond_proj_dim`); None for a denoiser that is guided the classic way."""
    return getattr(model.config, "time_cond_proj_dim", None)


def denoise_call(model: nn.Module, latents: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """The prediction (eps or v, per the schedule) for `latents` (B, C, h, w) at `timestep`
    (a scalar or (B,)) under `cond`; returns (B, C, h, w). The conditioning's concatenated
    channels (a 9-channel inpainting model's) are put beside the latents here; a
    guidance-distilled (LCM) U-Net reads cond.vectors["guidance_embedding"]."""
    if cond.concat is not None:
        latents = torch.cat([latents, cond.concat], dim=1)  # (B, C + C', h, w)
    guidance = cond.vectors.get("guidance_embedding")
    if backbone(model) == "unet":
        return model(
            latents, timestep, encoder_hidden_states=cond.tokens, encoder_attention_mask=cond.mask,
            timestep_cond=guidance, return_dict=False,
        )[0]  # fmt: skip
    if guidance is not None:
        raise TypeError("a DiT takes no guidance-scale embedding")
    timestep = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(len(latents))  # (B,)
    out = model(
        latents,
        encoder_hidden_states=cond.tokens,
        encoder_attention_mask=cond.mask,
        timestep=timestep,
        added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        return_dict=False,
    )[0]
    if learned_sigma(model):
        out = out.chunk(2, dim=1)[0]  # (B, C, h, w): the variance half is not used
    return out


def restore_buffers(model: nn.Module) -> None:
    """Rebuilds the non-persistent buffers a weights file lacks (garbage after a build on the
    meta device): PixArt's sin-cos position table, computed as its PatchEmbed computes it."""
    if backbone(model) != "dit":
        return  # the U-Net has none
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    patches = model.pos_embed
    table = get_2d_sincos_pos_embed(
        patches.proj.out_channels,
        patches.height,  # grid side (the sample size in patches)
        base_size=patches.base_size,
        interpolation_scale=patches.interpolation_scale,
        output_type="pt",
    )
    patches.pos_embed = table.float().unsqueeze(0).to(patches.proj.weight.device)  # (1, grid^2, width)
