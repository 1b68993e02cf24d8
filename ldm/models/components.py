"""The parts of a latent text-to-image model, held together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from ldm.config import ModelConfig, UpscalerConfig
from ldm.diffusion.schedule import scheduler_config
from ldm.diffusion.backbones import backbone_for_config
from ldm.models.autoencoder import build_vae
from ldm.models.sdxl_model import build_sdxl_text_side, sdxl_text_width, sdxl_unet_options
from ldm.models.text_conditioner import TextConditioner
from ldm.models.text_encoder import TextEncoder, build_text_encoder


@dataclass
class Components:
    vae: nn.Module  # diffusers AutoencoderKL; vae.config.scaling_factor scales latents
    conditioner: TextConditioner  # the text side: prompts -> Conditioning, through its list of text encoders
    denoiser: nn.Module  # a module a backbone adapter drives (ldm.diffusion.backbones)
    scheduler_config: dict  # diffusers scheduler config: the model's noise schedule
    config: Optional[ModelConfig] = None  # ours; None for imported diffusers folders
    name: str = "ldm"
    # Set for a super-resolution model (config.upscaler for ours; an imported x4 upscaler's
    # max_noise_level and low_res_scheduler): its denoiser reads a low-resolution picture.
    upscaler: Optional[UpscalerConfig] = None

    @property
    def text_encoders(self) -> list[TextEncoder]:
        return self.conditioner.encoders

    @property
    def first_text_encoder(self) -> TextEncoder:
        """The first (in SD 1/2 the only) text encoder: the one a model folder keeps in
        text_encoder.safetensors, LoRA keys lora_te_/lora_te1_ address and learned token
        embeddings extend (SDXL's CLIP ViT-L; its second encoder would be text_encoder_2)."""
        return self.conditioner.encoders[0]

    @first_text_encoder.setter
    def first_text_encoder(self, encoder: TextEncoder) -> None:
        self.conditioner.encoders[0] = encoder

    def modules(self) -> dict[str, nn.Module]:
        """The parts by name (diffusers' names for the text encoders: text_encoder, text_encoder_2, ...)."""
        encoders = {text_encoder_name(i): encoder for i, encoder in enumerate(self.text_encoders)}
        return {"vae": self.vae, **encoders, "denoiser": self.denoiser}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Components":
        for module in self.modules().values():
            # Only pass a dtype that changes something: diffusers warns on every dtype cast.
            cast = {"dtype": dtype} if dtype not in (None, next(module.parameters()).dtype) else {}
            module.to(device=device, **cast)
        return self

    def eval(self) -> "Components":
        for module in self.modules().values():
            module.eval().requires_grad_(False)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype


def text_encoder_name(index: int) -> str:
    """The part name of text encoder `index` (0-based): text_encoder, text_encoder_2, ..."""
    return "text_encoder" if index == 0 else f"text_encoder_{index + 1}"


def build_components(config: ModelConfig) -> Components:
    """Fresh (randomly initialised) components from a model config (an SDXL-shaped one's text
    side is its two CLIP text models: ldm.models.sdxl_model)."""
    if config.sdxl is not None:
        conditioner = build_sdxl_text_side(config.sdxl)
    else:
        conditioner = TextConditioner([build_text_encoder(config.text_encoder)])
    return Components(
        vae=build_vae(config.vae),
        conditioner=conditioner,
        denoiser=build_denoiser(config, conditioner.encoders[0].width),
        scheduler_config=scheduler_config(config.scheduler),
        config=config,
        name=config.name,
        upscaler=config.upscaler,
    )


def build_denoiser(config: ModelConfig, text_width: int) -> nn.Module:
    """The denoiser `model.denoiser` configures, built by its backbone (an SDXL-shaped model's
    U-Net reads both text encoders' width and its size conditioning)."""
    if config.sdxl is not None:
        return backbone_for_config(config.denoiser).build(config.denoiser, sdxl_text_width(config.sdxl), **sdxl_unet_options(config))
    return backbone_for_config(config.denoiser).build(config.denoiser, text_width)
