"""An SD3 ControlNet for an MMDiT, to be trained (stage `controlnet` on a `model.denoiser.kind:
mmdit` model): the MMDiT's config with fewer joint blocks, its patch and position embedding,
timestep-and-pooled-text embedding, text projection and first blocks copied, and the parts
diffusers' SD3ControlNetModel zero-initialises (the control patch embedding, the per-block
output projections) left at zero, so that step 0 is the base model exactly."""

from __future__ import annotations

from typing import Optional



def controlnet_layers(transformer_layers: int) -> int:
    """Half the MMDiT's joint blocks (SD3 Medium's ControlNets copy 12 of its 24): never the
    last one, whose text stream ends there and so has no text output to carry on."""
    return max(1, transformer_layers // 2)


def controlnet_from_mmdit(transformer, num_layers: Optional[int] = None):
    """An SD3ControlNetModel for `transformer` (SD3Transformer2DModel) with `num_layers`
    joint blocks (default: controlnet_layers), reading the pooled text as the MMDiT does."""
    from diffusers import SD3ControlNetModel

    config = transformer.config
    layers = num_layers or controlnet_layers(config.num_layers)
    net = SD3ControlNetModel(
        sample_size=config.sample_size, patch_size=config.patch_size, in_channels=config.in_channels,
        out_channels=config.out_channels, num_layers=layers, attention_head_dim=config.attention_head_dim,
        num_attention_heads=config.num_attention_heads, joint_attention_dim=config.joint_attention_dim,
        caption_projection_dim=config.caption_projection_dim, pooled_projection_dim=config.pooled_projection_dim,
        pos_embed_max_size=config.pos_embed_max_size, qk_norm=config.qk_norm,
        dual_attention_layers=tuple(k for k in config.dual_attention_layers if k < layers),
        force_zeros_for_pooled_projection=False,
    )  # fmt: skip
    theirs = transformer.state_dict()
    ours = net.state_dict()
    shared = ("pos_embed.", "time_text_embed.", "context_embedder.", "transformer_blocks.")
    # Same name and shape only: a block whose text stream ends (the MMDiT's last) differs there.
    copied = {name: theirs[name] for name, value in ours.items()
              if name.startswith(shared) and name in theirs and theirs[name].shape == value.shape}  # fmt: skip
    net.load_state_dict(copied, strict=False)
    return net.to(device=transformer.device, dtype=next(transformer.parameters()).dtype)

