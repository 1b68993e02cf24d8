"""Which module of a model each name in a LoRA file means.

kohya writes a module's name with underscores for its dots, after a prefix naming the part:
  U-Net          diffusers' names (lora_unet_down_blocks_1_attentions_0_proj_in: SD 1/2 files,
                 and SDXL files converted by diffusers), or the original (Stability) U-Net's
                 (lora_unet_input_blocks_4_1_proj_in: kohya's own SDXL files), which
                 ldm.formats.original_layout translates
  text encoders  transformers' names, with or without the `text_model.` level transformers 4 had
peft files (diffusers' layout) use diffusers' dotted names. The lora stage writes kohya SDXL
files under the original block names too (kohya_sdxl_unet_name).
"""

from __future__ import annotations

import torch

from ldm.formats.original_layout import LayoutError, rename, unet_prefixes
from ldm.models.components import Components

ADAPTED = (torch.nn.Linear, torch.nn.Conv2d)  # the layers a LoRA can change


def lora_target(components: Components, part: str) -> torch.nn.Module:
    """The module whose named_modules() a LoRA's names for `part` address."""
    module = components.modules()[part]
    return getattr(module, "model", module)  # an HF text encoder wraps its CLIPTextModel


def kohya_index(components: Components, part: str) -> dict[str, str]:
    """Underscored names (kohya's) -> dotted module names of `part`."""
    target = lora_target(components, part)
    originals = original_unet_names(target) if part == "denoiser" else {}
    index = {}
    for name, child in target.named_modules():
        if isinstance(child, ADAPTED):
            for alias in (name, "text_model." + name, originals.get(name)):  # transformers 4 kept a text_model level
                if alias is not None:
                    index[alias.replace(".", "_")] = name
    return index


def original_unet_names(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers module name -> its name in the original U-Net, for every layer that has one."""
    table = unet_prefixes(unet.config)
    names = {name: original_unet_name(table, name) for name, child in unet.named_modules() if isinstance(child, ADAPTED)}
    return {name: original for name, original in names.items() if original is not None}


def original_unet_name(table: list, name: str) -> str | None:
    """A U-Net module's name in the original layout (`table`: unet_prefixes of its config);
    None for a layer the original layout has no place for."""
    try:
        (key,) = rename({f"{name}.weight": None}, table, "U-Net")
    except LayoutError:
        return None
    return key.removesuffix(".weight")


def kohya_sdxl_unet_name(unet: torch.nn.Module):
    """kohya's name for an SDXL U-Net module (what sd-scripts writes): the original block names
    (input_blocks.4.1.proj_in), or diffusers' where the original layout has no place."""
    table = unet_prefixes(unet.config)
    return lambda name: original_unet_name(table, name) or name


def peft_module(components: Components, part: str, name: str) -> str | None:
    """The module of `part` a peft file's dotted `name` means; None when there is none."""
    modules = dict(lora_target(components, part).named_modules())
    for candidate in (name, name.removeprefix("text_model.")):
        if candidate in modules:
            return candidate
    return None
