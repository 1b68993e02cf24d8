"""diffusers' UNet2DConditionModel (Stable Diffusion 1.x / 2.x and our own U-Nets)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ldm.config import UNetConfig
from ldm.diffusion.backbones.base import Backbone, Residuals
from ldm.diffusion.backbones.unet_attention import unet_attention_layers
from ldm.diffusion.conditioning import Conditioning
from ldm.errors import LdmError


class MissingCondition(LdmError, ValueError):
    """A call without the conditions this U-Net reads (an SDXL U-Net's size ids and pooled text)."""


def takes_size_conditioning(config) -> bool:
    """Whether a network with this diffusers config (a U-Net or a ControlNet) reads SDXL's
    micro-conditioning (`addition_embed_type: text_time`): (original size, crop top-left,
    target size) beside the pooled text."""
    return getattr(config, "addition_embed_type", None) == "text_time"


def size_conditioning(cond: Conditioning) -> dict:
    """The keyword arguments of a text_time network's call: cond.pooled (B, P) and
    cond.vectors["time_ids"] (B, 6) as `added_cond_kwargs`."""
    if "time_ids" not in cond.vectors or cond.pooled is None:
        raise MissingCondition("an SDXL U-Net or ControlNet needs the pooled text and size conditioning (time_ids); this call gave none")
    return {"added_cond_kwargs": {"text_embeds": cond.pooled, "time_ids": cond.vectors["time_ids"]}}


class UNet(Backbone):
    kind = "unet"
    diffusers_class = "UNet2DConditionModel"
    diffusers_folder = "unet"
    config_section = UNetConfig
    takes_guidance_embedding = True  # config time_cond_proj_dim

    @staticmethod
    def build(section: UNetConfig, text_width: int, **size_conditioning) -> nn.Module:
        """`size_conditioning`: an SDXL-shaped U-Net's text_time arguments (ldm.models.sdxl_model)."""
        from diffusers import UNet2DConditionModel

        head_dim, depth = section.attention_head_dim, section.transformer_layers_per_block
        return UNet2DConditionModel(
            sample_size=section.sample_size,
            in_channels=section.in_channels,
            out_channels=section.out_channels,
            down_block_types=tuple(section.down_block_types),
            up_block_types=tuple(section.up_block_types),
            block_out_channels=tuple(section.block_out_channels),
            layers_per_block=section.layers_per_block,
            attention_head_dim=tuple(head_dim) if isinstance(head_dim, list) else head_dim,
            transformer_layers_per_block=tuple(depth) if isinstance(depth, list) else depth,
            norm_num_groups=section.norm_num_groups,
            cross_attention_dim=section.cross_attention_dim or text_width,
            use_linear_projection=section.use_linear_projection,
            upcast_attention=section.upcast_attention,
            time_cond_proj_dim=section.time_cond_proj_dim,
            num_class_embeds=section.num_class_embeds,
            **size_conditioning,
        )

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
                residuals: Optional[Residuals]) -> torch.Tensor:  # fmt: skip
        down, mid = residuals if residuals is not None else (None, None)
        return self.module(
            model_input, timestep, encoder_hidden_states=cond.tokens, encoder_attention_mask=cond.mask,
            timestep_cond=cond.vectors.get("guidance_embedding"),
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
            **self.added_conditions(cond), return_dict=False,
        )[0]  # fmt: skip

    def added_conditions(self, cond: Conditioning) -> dict:
        """Keyword arguments for the conditions beyond the text tokens. SD 1.x / 2.x U-Nets
        take none; an upscaler's noise level (cond.vectors["noise_level"], (B,) integers) is
        its class label; SDXL's takes its size conditioning (`size_conditioning`)."""
        if "noise_level" in cond.vectors:
            return {"class_labels": cond.vectors["noise_level"]}
        return size_conditioning(cond) if self.takes_time_ids else {}

    @property
    def takes_time_ids(self) -> bool:
        return takes_size_conditioning(self.config)

    supports_lora = True  # SDXL's too: kohya's original block names are read through ldm.lora.module_names

    supports_controlnet = True  # an SDXL U-Net's ControlNets read its size conditioning too (ldm.control.denoiser)

    @property
    def title(self) -> str:  # type: ignore[override]
        return "SDXL U-Net" if self.takes_time_ids else "U-Net"

    @property
    def described(self) -> str:  # type: ignore[override]
        return "an SDXL U-Net" if self.takes_time_ids else "a U-Net"

    @property
    def guidance_embedding_width(self) -> Optional[int]:
        return getattr(self.config, "time_cond_proj_dim", None)  # set on LCM students

    def input_conv(self) -> tuple[nn.Module, str]:
        return self.inner, "conv_in"

    def attention_layers(self, cells: int) -> list[tuple[int, int]]:
        return unet_attention_layers(self.config, cells)
