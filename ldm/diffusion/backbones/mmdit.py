"""diffusers' SD3Transformer2DModel (Stable Diffusion 3 / 3.5's MMDiT): patches of the latents
and the text tokens attend jointly in every block; the timestep and the pooled text vector
modulate every block (adaLN). Loaded from SD3 diffusers folders, or built from
`model.denoiser.kind: mmdit` (ldm.config.MMDiTConfig) to be trained on our single text encoder."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ldm.config import MMDiTConfig
from ldm.diffusion.backbones.base import Backbone, Residuals
from ldm.diffusion.backbones.unet import MissingCondition
from ldm.diffusion.conditioning import Conditioning


class MMDiT(Backbone):
    kind = "mmdit"
    title = "MMDiT"
    diffusers_class = "SD3Transformer2DModel"
    diffusers_folder = "transformer"
    config_section = MMDiTConfig
    supports_lora = True  # diffusers' layout (transformer.*): ldm.lora
    supports_controlnet = True  # SD3ControlNetModel's block samples (ldm.control.sd3)

    @staticmethod
    def build(section: MMDiTConfig, text_width: int) -> nn.Module:
        from diffusers import SD3Transformer2DModel

        return SD3Transformer2DModel(
            sample_size=section.sample_size,
            patch_size=section.patch_size,
            in_channels=section.in_channels,
            out_channels=section.out_channels,
            num_layers=section.num_layers,
            attention_head_dim=section.attention_head_dim,
            num_attention_heads=section.num_attention_heads,
            joint_attention_dim=section.joint_attention_dim or text_width,
            caption_projection_dim=section.caption_projection_dim or section.width,
            pooled_projection_dim=section.pooled_projection_dim,
            pos_embed_max_size=section.pos_embed_max_size,
            dual_attention_layers=tuple(section.dual_attention_layers),
            qk_norm=section.qk_norm,
        )

    @property
    def described(self) -> str:
        return "an MMDiT"

    def forward(self, model_input: torch.Tensor, timestep: torch.Tensor, cond: Conditioning,
                residuals: Optional[Residuals]) -> torch.Tensor:  # fmt: skip
        if "guidance_embedding" in cond.vectors:
            raise TypeError("an MMDiT takes no guidance-scale embedding")
        if cond.pooled is None:
            raise MissingCondition("an MMDiT needs the pooled text vector (both CLIPs' pooled projections); this call gave none")
        if cond.pooled.shape[-1] != self.config.pooled_projection_dim:
            raise MissingCondition(f"an MMDiT reading a {self.config.pooled_projection_dim}-wide pooled text vector was given a {cond.pooled.shape[-1]}-wide one")
        timestep = torch.as_tensor(timestep, device=model_input.device).reshape(-1).expand(len(model_input))  # (B,)
        return self.module(
            hidden_states=model_input,
            encoder_hidden_states=self.joint_tokens(cond),  # (B, 77 + T5 tokens, joint width)
            pooled_projections=cond.pooled,  # (B, both CLIPs' projections; our text encoder's one)
            timestep=timestep,
            block_controlnet_hidden_states=residuals,  # a list of (B, patches, width), or None
            return_dict=False,
        )[0]

    def joint_tokens(self, cond: Conditioning) -> torch.Tensor:
        """The text tokens at the joint width: narrower ones (a single text encoder's, one the
        MMDiT was built for) zero-padded along the width, as SD3 pads its CLIPs' states to T5's."""
        missing = self.config.joint_attention_dim - cond.tokens.shape[-1]
        if missing < 0:
            raise MissingCondition(f"an MMDiT reading {self.config.joint_attention_dim}-wide text tokens was given {cond.tokens.shape[-1]}-wide ones")
        return torch.nn.functional.pad(cond.tokens, (0, missing)) if missing else cond.tokens  # (B, L, joint width)

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
