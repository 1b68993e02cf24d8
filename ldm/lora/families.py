"""Which family of models a LoRA file was made for, told from its keys and shapes, so that an
SDXL LoRA on an SD 1/2 model (or the reverse) is refused in one line naming both, before the
modules are matched one by one.

The width the U-Net's cross-attention reads (the text width: SD 1.x 768, SD 2.x 1024, SDXL's
two encoders together 2048) shows in any file that adapts a cross-attention key projection
(`attn2.to_k`); a file that changes a second text encoder (`lora_te2_`, `text_encoder_2.`), or
numbers its first (`lora_te1_`), is an SDXL file. An SD3 file adapts an MMDiT: `transformer.`
keys (diffusers' layout) or sd-scripts' `lora_unet_joint_blocks_` and the original MMDiT's other
names (`lora_unet_final_layer_`, `lora_unet_context_embedder`, ...), with T5 as `lora_te3_`.
"""

from __future__ import annotations

import re
from typing import Optional

import torch

from ldm.diffusion.backbones import backbone_of
from ldm.models.components import Components

FAMILY_OF_WIDTH = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}
SECOND_ENCODER_PREFIXES = ("lora_te2_", "text_encoder_2.")
SDXL_PREFIXES = SECOND_ENCODER_PREFIXES + ("lora_te1_",)  # kohya numbers the text encoders only for SDXL
CROSS_ATTENTION_KEY = re.compile(r"attn2[._]to_k\.lora_(?:down|A)\.weight$")
SD3_PEFT_PREFIX = "transformer."
SD3_KOHYA = re.compile(r"lora_(?:unet_(?:joint_blocks|final_layer|[xty]_embedder|context_embedder)|te3_)")
U_NET_PREFIXES = ("unet.", "lora_unet_")
SD3 = "SD3 (an MMDiT)"


def family_mismatch(state: dict[str, torch.Tensor], components: Components) -> Optional[str]:
    """Why a LoRA file's tensors (`state`) are for another family than `components`; None when
    nothing says so."""
    if backbone_of(components.denoiser).kind == "mmdit":
        return _mismatch_on_sd3(state)
    model_width = components.denoiser.config.cross_attention_dim
    model = _family(len(components.text_encoders) > 1, model_width, "an SD 1.x/2.x-shaped model")
    if any(key.startswith(SD3_PEFT_PREFIX) or SD3_KOHYA.match(key) for key in state):
        return f"this LoRA is for {SD3}; this model is {model}"
    width = cross_attention_width(state)
    if any(key.startswith(SECOND_ENCODER_PREFIXES) for key in state) and len(components.text_encoders) < 2:
        return f"this LoRA is for SDXL (it changes a second text encoder); this model is {model}"
    if width is not None and width != model_width:
        sdxl = any(key.startswith(SDXL_PREFIXES) for key in state)
        return f"this LoRA is for {_family(sdxl, width, 'another model')}; this model is {model}"
    return None


def _mismatch_on_sd3(state: dict[str, torch.Tensor]) -> Optional[str]:
    """A U-Net's LoRA on an SD3 model (text-encoder parts alone may fit its CLIPs: their shapes
    are checked module by module)."""
    if any(key.startswith(U_NET_PREFIXES) and not SD3_KOHYA.match(key) for key in state):
        width = cross_attention_width(state)
        sdxl = any(key.startswith(SDXL_PREFIXES) for key in state)
        family = _family(sdxl, width, "a U-Net model") if width is not None else "a U-Net model"
        return f"this LoRA is for {family}; this model is {SD3}"
    return None


def cross_attention_width(state: dict[str, torch.Tensor]) -> Optional[int]:
    """The text width the file's cross-attention adapters read; None when it adapts none."""
    return next((tensor.flatten(1).shape[1] for key, tensor in state.items() if CROSS_ATTENTION_KEY.search(key)), None)


def _family(sdxl: bool, width: int, otherwise: str) -> str:
    name = "SDXL" if sdxl else FAMILY_OF_WIDTH.get(width, otherwise)
    return f"{name} (cross-attention width {width})"
