"""The transformer denoiser (stage 2, `model.denoiser: dit`): diffusers'
PixArtTransformer2DModel (PixArt-alpha) built from our config."""

from __future__ import annotations

from diffusers import PixArtTransformer2DModel

from ldm.config import DiTConfig


def build_dit(config: DiTConfig, text_width: int) -> PixArtTransformer2DModel:
    return PixArtTransformer2DModel(
        num_attention_heads=config.heads,
        attention_head_dim=config.head_dim,
        in_channels=config.in_channels,
        out_channels=config.out_channels * (2 if config.learned_sigma else 1),
        num_layers=config.layers,
        patch_size=config.patch_size,
        sample_size=config.sample_size,
        cross_attention_dim=config.width,  # the captions are projected to the model width first
        caption_channels=config.caption_channels or text_width,
        # PixArt-alpha's resolution / aspect-ratio micro-conditions are for its 1024 px model only.
        use_additional_conditions=False,
    )
