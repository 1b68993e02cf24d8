"""The denoising U-Net (stage 2): diffusers UNet2DConditionModel built from our config."""

from __future__ import annotations

from diffusers import UNet2DConditionModel

from ldm.config import UNetConfig


def build_unet(config: UNetConfig, text_width: int) -> UNet2DConditionModel:
    head_dim = config.attention_head_dim
    return UNet2DConditionModel(
        sample_size=config.sample_size,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=tuple(config.down_block_types),
        up_block_types=tuple(config.up_block_types),
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        attention_head_dim=tuple(head_dim) if isinstance(head_dim, list) else head_dim,
        norm_num_groups=config.norm_num_groups,
        cross_attention_dim=config.cross_attention_dim or text_width,
        use_linear_projection=config.use_linear_projection,
        upcast_attention=config.upcast_attention,
        time_cond_proj_dim=config.time_cond_proj_dim,
    )
