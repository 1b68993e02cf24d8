"""SDXL LoRA files for tests: random low-rank weights for every Linear and Conv2d of a tiny
SDXL model's U-Net and both text encoders, in the layouts people share:
  kohya            lora_unet_<original block names>, lora_te1_, lora_te2_ (kohya's SDXL files)
  kohya-diffusers  lora_unet_<diffusers names>, lora_te1_, lora_te2_
  peft             unet.<...>, text_encoder.<...>, text_encoder_2.<...> (diffusers' own layout;
                   alpha in the header's adapter metadata, as diffusers writes it)
The original block names are ours (ldm.lora.module_names, from ldm.formats.original_layout's
tables); diffusers' load_lora_weights reads these files with its own, so a wrong name shows."""

import json

import torch
from safetensors.torch import save_file

from ldm.lora.module_names import original_unet_names

RANK = 4
ALPHAS = {"unet": 8.0, "text_encoder": 2.0, "text_encoder_2": 6.0}  # each part its own, so a mix-up shows
LAYOUTS = ["kohya", "kohya-diffusers", "peft"]


def random_sdxl_lora(parts: dict, seed: int = 0) -> dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]]:
    """(part, module name) -> (down (rank, in[, kh, kw]), up (out, rank[, 1, 1])) for `parts`'
    unet, text_encoder and text_encoder_2 (diffusers / transformers modules)."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for part in ALPHAS:
        for name, module in parts[part].named_modules():
            if isinstance(module, torch.nn.Linear) and "projection" not in name:
                shapes = (RANK, module.in_features), (module.out_features, RANK)
            elif isinstance(module, torch.nn.Conv2d):
                shapes = (RANK, module.in_channels, *module.kernel_size), (module.out_channels, RANK, 1, 1)
            else:
                continue
            down, up = (torch.randn(*shape, generator=generator) * 0.05 for shape in shapes)
            weights[part, name] = down, up
    return weights


def write_sdxl_lora(weights: dict, unet, path, layout: str):
    state, originals = {}, original_unet_names(unet)
    for (part, name), (down, up) in weights.items():
        if layout == "peft":
            state[f"{part}.{name}.lora_A.weight"], state[f"{part}.{name}.lora_B.weight"] = down, up
            continue
        if part == "unet" and layout == "kohya":
            if name not in originals:  # a layer the original U-Net has no name for
                continue
            name = originals[name]
        if name.startswith("add_embedding") and layout == "kohya-diffusers":
            continue  # diffusers' converter drops these names (ldm reads them)
        if part != "unet" and not name.startswith("text_model."):
            name = "text_model." + name  # kohya's text encoder names
        prefix = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}[part]
        stem = prefix + name.replace(".", "_")
        state[f"{stem}.lora_down.weight"], state[f"{stem}.lora_up.weight"] = down, up
        state[f"{stem}.alpha"] = torch.tensor(ALPHAS[part])
    save_file(state, str(path), metadata=_adapter_metadata(weights) if layout == "peft" else None)
    return path


def sdxl_lora_for_folder(folder, path, layout: str, seed: int = 0):
    """A random LoRA file for every layer of the SDXL diffusers folder `folder`."""
    from diffusers import StableDiffusionXLPipeline

    parts = StableDiffusionXLPipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True).components
    return write_sdxl_lora(random_sdxl_lora(parts, seed), parts["unet"], path, layout)


def _adapter_metadata(weights: dict) -> dict[str, str]:
    """The header diffusers' save_lora_weights writes: each part's peft LoraConfig, its keys
    prefixed by the part."""
    from peft import LoraConfig

    entries = {}
    for part, alpha in ALPHAS.items():
        config = LoraConfig(r=RANK, lora_alpha=alpha, target_modules=[name for p, name in weights if p == part]).to_dict()
        entries.update({f"{part}.{key}": sorted(value) if isinstance(value, set) else value for key, value in config.items()})
    return {"lora_adapter_metadata": json.dumps(entries)}

