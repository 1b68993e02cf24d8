"""What the lora stage adapts in each kind of denoiser, and how the file it writes names them.

  U-Net  attention: to_q, to_k, to_v, to_out.0 of every attention block; all: every Linear and
         Conv2d. Files in kohya's layout (lora_unet_...) or peft's (unet....lora_A).
  MMDiT  attention: both streams' projections of each joint-attention block (to_q/k/v, to_out.0
         for the image patches; add_q/k/v_proj, to_add_out for the text tokens; attn2 too where
         a block has SD3.5's second attention), as diffusers' SD3 LoRA training adapts them;
         all: those and both streams' feed-forward layers. Files in diffusers' layout only
         (transformer.<module>.lora_A.weight), what StableDiffusion3Pipeline.load_lora_weights
         and ldm.lora.apply read; kohya's SD3 layout is read (ldm.lora.mmdit_names), not written.
A DiT (PixArt) takes no LoRA files, so the stage refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from torch import nn

from ldm.config import ConfigError
from ldm.diffusion.backbones import backbone_of

MMDIT_ATTENTION = re.compile(r"transformer_blocks\.\d+\.attn2?\.(to_[qkv]|to_out\.0|add_[qkv]_proj|to_add_out)$")
MMDIT_FEED_FORWARD = re.compile(r"transformer_blocks\.\d+\.ff(_context)?\.net\.(0\.proj|2)$")


def mmdit_targets(model: nn.Module, targets: str) -> list[str]:
    """The MMDiT's Linear layers that `targets` (attention | all) names, in full."""
    patterns = [MMDIT_ATTENTION] + ([MMDIT_FEED_FORWARD] if targets == "all" else [])
    return [
        name for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and any(pattern.search(name) for pattern in patterns)
    ]  # fmt: skip


@dataclass(frozen=True)
class DenoiserLora:
    """How one kind of denoiser is adapted: its target list for add_lora_adapters (a
    target_modules name, or the names themselves), the layouts its files may take, the first
    one the default, and the prefix of its part in peft's layout."""

    targets: Callable[[nn.Module, str], str | list[str]]
    layouts: tuple[str, ...]
    peft_prefix: str


DENOISER_LORAS = {
    "unet": DenoiserLora(lambda model, targets: targets, ("kohya", "peft"), "unet."),
    "mmdit": DenoiserLora(mmdit_targets, ("peft",), "transformer."),
}


def denoiser_lora(denoiser: nn.Module, layout: str | None) -> tuple[DenoiserLora, str]:
    """How `denoiser` is adapted, and the file layout (`layout`, null: its kind's default);
    ConfigError in one line when the stage cannot train a LoRA for it or in that layout."""
    backbone = backbone_of(denoiser)
    lora = DENOISER_LORAS.get(backbone.kind) if backbone.supports_lora else None
    if lora is None:
        raise ConfigError(f"stage lora trains LoRAs for U-Net and MMDiT models; this model's denoiser is {backbone.described}")
    if layout is not None and layout not in lora.layouts:
        raise ConfigError(
            f"lora.layout {layout} is not written for {backbone.described}; its LoRAs take diffusers' layout (lora.layout: peft)"
        )
    return lora, layout or lora.layouts[0]
