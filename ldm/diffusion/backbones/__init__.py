"""Backbones: each denoiser family behind one adapter, found in one registry.

base.py      Backbone: how a denoiser module is built and called (latents, t, Conditioning,
             ControlNet residuals) and what it offers: ControlNet, LoRA, patch size, its input
             convolution, buffers to rebuild, learned sigma, a guidance embedding, where it
             attends (attention_layers: the step-time rule's cost)
unet.py      diffusers UNet2DConditionModel (model.denoiser.kind: unet); unet_attention.py
             counts its attention layers from its config
pixart.py    diffusers PixArtTransformer2DModel (model.denoiser.kind: dit)
mmdit.py     diffusers SD3Transformer2DModel (SD3's MMDiT; model.denoiser.kind: mmdit, or SD3 folders)
registry.py  BACKBONES and the lookups: backbone_of(module), backbone_for_config(section),
             backbone_for_class(diffusers class name), backbone_in_diffusers_folder(path)
"""

from ldm.diffusion.backbones.base import Backbone, Residuals, Steering
from ldm.diffusion.backbones.registry import (
    BACKBONES,
    UnknownBackbone,
    backbone_for_class,
    backbone_for_config,
    backbone_in_diffusers_folder,
    backbone_of,
)

__all__ = [
    "BACKBONES", "Backbone", "Residuals", "Steering", "UnknownBackbone",
    "backbone_for_class", "backbone_for_config", "backbone_in_diffusers_folder", "backbone_of",
]  # fmt: skip
