"""diffusers' SD3Transformer2DModel (Stable Diffusion 3 / 3.5's MMDiT): patches of the latents
and the text tokens attend jointly in every block; the timestep and the pooled text vector
modulate every block (adaLN). Loaded from diffusers folders only: no config section builds
one yet (training an MMDiT is not yet supported)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ldm.diffusion.backbones.base import Backbone, Residuals
from ldm.diffusion.backbones.unet import MissingCondition
from ldm.diffusion.conditioning import Conditioning


class NoConfigSection:
    """Stands for the config section an MMDiT does not have yet: no ModelConfig.denoiser is one."""


class MMDiT(Backbone):
    kind = "mmdit"
    title = "MMDiT"
    diffusers_class = "SD3Transformer2DModel"
    diffusers_folder = "transformer"
    config_section = NoConfigSection
    configurable = False
    supports_lora = True  # diffusers' layout (transformer.*): ldm.lora

    @staticmethod
    def build(section, text_width: int) -> nn.Module:
        raise NotImplementedError("an MMDiT is loaded from an SD3 diffusers folder; building one from a config is not yet supported")

    @property
    def described(self) -> str:
        return "an MMDiT"

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
                residuals: Optional[Residuals]) -> torch.Tensor:  # fmt: skip
        if "guidance_embedding" in cond.vectors:
            raise TypeError("an MMDiT takes no guidance-scale embedding")
        if cond.pooled is None:
            raise MissingCondition("an MMDiT needs the pooled text vector (both CLIPs' pooled projections); this call gave none")
        timestep = torch.as_tensor(timestep, device=model_input.device).reshape(-1).expand(len(model_input))  # (B,)
        return self.module(
            hidden_states=model_input,
            encoder_hidden_states=cond.tokens,  # (B, 77 + T5 tokens, joint width)
            pooled_projections=cond.pooled,  # (B, both CLIPs' projections)
            timestep=timestep,
            return_dict=False,
        )[0]

    @property
    def patch_size(self) -> int:
        return self.config.patch_size

    def input_conv(self) -> tuple[nn.Module, str]:
        return self.inner.pos_embed, "proj"

    def attention_layers(self, cells: int) -> list[tuple[int, int]]:
        """The image patches of each joint-attention block (the text tokens beside them are a
        fixed cost the step-time rule, which scales with the picture, leaves out)."""
        config = self.config
        tokens = cells // config.patch_size**2
        return [(tokens, config.num_attention_heads * config.attention_head_dim)] * config.num_layers
