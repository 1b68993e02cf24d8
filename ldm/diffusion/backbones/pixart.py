"""diffusers' PixArtTransformer2DModel (PixArt-alpha): patches of the latents, adaLN-single
timestep conditioning, cross-attention to the text tokens; `model.denoiser.kind: dit`."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ldm.config import DiTConfig
from ldm.diffusion.backbones.base import Backbone, Residuals
from ldm.diffusion.conditioning import Conditioning


class PixArt(Backbone):
    kind = "dit"
    title = "DiT"
    diffusers_class = "PixArtTransformer2DModel"
    diffusers_folder = "transformer"
    config_section = DiTConfig

    @staticmethod
    def build(section: DiTConfig, text_width: int) -> nn.Module:
        from diffusers import PixArtTransformer2DModel

        return PixArtTransformer2DModel(
            num_attention_heads=section.heads,
            attention_head_dim=section.head_dim,
            in_channels=section.in_channels,
            out_channels=section.out_channels * (2 if section.learned_sigma else 1),
            num_layers=section.layers,
            patch_size=section.patch_size,
            sample_size=section.sample_size,
            cross_attention_dim=section.width,  # the captions are projected to the model width first
            caption_channels=section.caption_channels or text_width,
            # PixArt-alpha's resolution / aspect-ratio micro-conditions are for its 1024 px model only.
            use_additional_conditions=False,
        )

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
                residuals: Optional[Residuals]) -> torch.Tensor:  # fmt: skip
        if "guidance_embedding" in cond.vectors:
            raise TypeError("a DiT takes no guidance-scale embedding")
        timestep = torch.as_tensor(timestep, device=model_input.device).reshape(-1).expand(len(model_input))  # (B,)
        out = self.module(
            model_input,
            encoder_hidden_states=cond.tokens,
            encoder_attention_mask=cond.mask,
            timestep=timestep,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]
        if self.learned_sigma:
            out = out.chunk(2, dim=1)[0]  # (B, C, h, w): the variance half is not used
        return out

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    @property
    def learned_sigma(self) -> bool:
        """With learned variance PixArt predicts 2C channels for C latent channels (the input
        has C, or 2C + 1 for inpainting); the first C are the eps / v prediction."""
        config = self.config
        predicted = config.out_channels // 2
        return config.out_channels % 2 == 0 and predicted in (config.in_channels, (config.in_channels - 1) // 2)

    def input_conv(self) -> tuple[nn.Module, str]:
        return self.inner.pos_embed, "proj"

    def attention_layers(self, cells: int) -> list[tuple[int, int]]:
        tokens = cells // self.config.patch_size**2  # one token per patch, in every layer
        return [(tokens, self.config.num_attention_heads * self.config.attention_head_dim)] * self.config.num_layers  # the patch embedding: a patch_size-strided conv

    def restore_buffers(self) -> None:
        """PixArt's sin-cos position table, computed as its PatchEmbed computes it."""
        from diffusers.models.embeddings import get_2d_sincos_pos_embed

        patches = self.inner.pos_embed
        table = get_2d_sincos_pos_embed(
            patches.proj.out_channels,
            patches.height,  # grid side (the sample size in patches)
            base_size=patches.base_size,
            interpolation_scale=patches.interpolation_scale,
            output_type="pt",
        )
        patches.pos_embed = table.float().unsqueeze(0).to(patches.proj.weight.device)  # (1, grid^2, width)
