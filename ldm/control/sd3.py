"""SD3 ControlNets (diffusers' SD3ControlNetModel): a copy of the first joint blocks of an
MMDiT that reads the control image as latents (through the model's VAE, patch-embedded beside
the noisy latents) and returns one sample per block, which the MMDiT adds to its joint
blocks' outputs (`block_controlnet_hidden_states`). As diffusers'
StableDiffusion3ControlNetPipeline feeds it: the guidance-batched latents and text tokens
(none for a ControlNet without text attention, SD 3.5's), the pooled text or zeros where its
config says `force_zeros_for_pooled_projection` (InstantX's), and control latents that are
not shifted for those."""

from __future__ import annotations

import torch

from ldm.diffusion.conditioning import Conditioning

SD3_CLASS = "SD3ControlNetModel"


def is_sd3_controlnet(config) -> bool:
    """Whether a ControlNet config (a loaded one's, or a folder's config.json) is an SD3
    ControlNet's; told by fields only it has, as a loaded config lacks `_class_name`."""
    return "pos_embed_max_size" in config and "joint_attention_dim" in config


@torch.no_grad()
def control_latents(vae, config, image: torch.Tensor) -> torch.Tensor:
    """A control image (1, 3, H, W) in [0, 1] -> the latents (1, C, h, w) an SD3 ControlNet
    reads: the VAE posterior's mean (a seed draws the same picture; diffusers draws a
    sample from the global generator), shifted unless the ControlNet forces zeros for the
    pooled text, and scaled."""
    pixels = (image * 2 - 1).to(device=vae.device, dtype=vae.dtype)  # [0, 1] -> [-1, 1]
    latents = vae.encode(pixels).latent_dist.mode()
    shift = 0.0 if config.force_zeros_for_pooled_projection else (getattr(vae.config, "shift_factor", None) or 0.0)
    return ((latents - shift) * vae.config.scaling_factor).contiguous()  # (1, C, h, w)


def block_samples(net, latents: torch.Tensor, timestep, cond: Conditioning, control: torch.Tensor, scale: float) -> list[torch.Tensor]:
    """One SD3 ControlNet's block samples (each (B, patches, width), weighed by `scale`) for
    the denoiser call on `latents` (B, C, h, w) under `cond`; `control`: its control latents."""
    config = net.config
    timestep = torch.as_tensor(timestep, device=latents.device).reshape(-1).expand(len(latents))  # (B,)
    pooled = torch.zeros_like(cond.pooled) if config.force_zeros_for_pooled_projection else cond.pooled
    tokens = None
    if config.joint_attention_dim is not None:  # padded to the joint width as the MMDiT pads them
        tokens = torch.nn.functional.pad(cond.tokens, (0, config.joint_attention_dim - cond.tokens.shape[-1]))
    control = control.to(device=latents.device, dtype=latents.dtype).expand(len(latents), -1, -1, -1)
    return net(hidden_states=latents[:, : config.in_channels], controlnet_cond=control, conditioning_scale=scale,
               encoder_hidden_states=tokens, pooled_projections=pooled, timestep=timestep, return_dict=False)[0]  # fmt: skip
