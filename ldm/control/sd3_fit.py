"""Whether an SD3 ControlNet can steer an MMDiT, told from the two configs before any sampling
(a misfit otherwise fails inside the transformer's forward, steps in): its block samples must
be as wide as the MMDiT's joint blocks, its patches the MMDiT's, and it must read the same
latents, text and pooled vector, with position embeddings for every patch the MMDiT has."""

from __future__ import annotations

from typing import Optional


def width(config) -> int:
    return config.num_attention_heads * config.attention_head_dim


def sd3_mismatch(controlnet_config, transformer_config, latent_channels: int) -> Optional[str]:
    """Why an SD3 ControlNet with `controlnet_config` cannot steer an MMDiT with
    `transformer_config` over `latent_channels` latents; None when it can."""
    ours, theirs = transformer_config, controlnet_config
    if theirs.extra_conditioning_channels:
        return "it is an SD3 inpainting ControlNet (it reads a mask beside the control image), which is not supported"
    if width(theirs) != width(ours):
        return f"its blocks are {width(theirs)} wide; this model's MMDiT blocks are {width(ours)} wide"
    if theirs.patch_size != ours.patch_size:
        return f"it reads {theirs.patch_size}x{theirs.patch_size} patches; this model's MMDiT reads {ours.patch_size}x{ours.patch_size}"
    if theirs.in_channels != latent_channels:
        return f"it reads {theirs.in_channels} latent channels; this model has {latent_channels}"
    if theirs.joint_attention_dim not in (None, ours.joint_attention_dim):
        return f"it reads text {theirs.joint_attention_dim} wide; this model's is {ours.joint_attention_dim}"
    if theirs.pooled_projection_dim != ours.pooled_projection_dim:
        return f"it reads a pooled text vector {theirs.pooled_projection_dim} wide; this model's is {ours.pooled_projection_dim}"
    if theirs.use_pos_embed and theirs.pos_embed_max_size < ours.pos_embed_max_size:
        return f"its positions reach {theirs.pos_embed_max_size} patches a side; this model's reach {ours.pos_embed_max_size}"
    return None
