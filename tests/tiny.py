"""Tiny model configs that build and run in well under a second on a CPU."""

from __future__ import annotations

import copy

TINY_MODEL = {
    "name": "tiny",
    "vae": {
        "block_out_channels": [8, 16],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "sample_size": 32,
        "scaling_factor": 0.5,
    },
    "text_encoder": {"width": 32, "heads": 2, "layers": 2, "embed_dim": 16, "context_length": 77},
    # The denoiser section's choices: `denoiser` names one (overrides: denoiser="dit",
    # unet__in_channels=9, dit__learned_sigma=True); tiny_model_dict makes it `model.denoiser`.
    "denoiser": "unet",
    "unet": {
        "block_out_channels": [16, 32],
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "norm_num_groups": 4,
        "sample_size": 16,
    },
    "dit": {"layers": 2, "heads": 4, "head_dim": 16, "sample_size": 16},
    # SD3's MMDiT on the tiny text encoder: tokens 32 wide, pooled projection 16 (the nulls' defaults).
    "mmdit": {"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 16, "in_channels": 4, "out_channels": 4, "sample_size": 16, "pos_embed_max_size": 16},
    "scheduler": {"beta_schedule": "scaled_linear"},
}

BACKBONES = ["unet", "dit"]  # the `backbone` fixture's: most denoiser tests run for both
KINDS = [*BACKBONES, "mmdit"]  # every model.denoiser kind (the MMDiT's tests are its own)


def tiny_model_dict(old_form: bool = False, **overrides) -> dict:
    """The tiny model section with `overrides` (`a__b=v` sets a.b): one tagged `denoiser`
    section, or with `old_form` as configs were written before it (`denoiser: unet` beside
    both a `unet:` and a `dit:` section)."""
    data = copy.deepcopy(TINY_MODEL)
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    if old_form:
        data.pop("mmdit")  # the old form knew only these two
        return data
    if not isinstance(data["denoiser"], str):
        return data
    sections = {kind: data.pop(kind) for kind in KINDS}
    return {**data, "denoiser": {"kind": data["denoiser"], **sections.get(data["denoiser"], {})}}


def build_tiny(**overrides):
    """Components of the tiny model (with `tiny_model_dict` overrides), seeded."""
    import torch

    from ldm.config import model_config_from_dict
    from ldm.models.components import build_components

    torch.manual_seed(0)
    return build_components(model_config_from_dict(tiny_model_dict(**overrides))).eval()


# A super-resolution model in the form of Stable Diffusion's x4 upscaler: a 3-level (x4) VAE,
# a U-Net reading the latents + the picture's 3 channels, one class label per noise level.
TINY_UPSCALER = {
    "vae__block_out_channels": [8, 16, 16],
    "vae__scaling_factor": 0.08333,
    "unet__in_channels": 7,
    "unet__num_class_embeds": 351,
    "upscaler": {"max_noise_level": 350, "noise_level": 20},
}


def build_tiny_upscaler(**overrides):
    """Components of a tiny x4 upscaler (with `tiny_model_dict` overrides), seeded."""
    return build_tiny(**{**TINY_UPSCALER, **overrides})
