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
    "unet": {
        "block_out_channels": [16, 32],
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
        "norm_num_groups": 4,
        "sample_size": 16,
    },
    # Used where `denoiser: dit` (tests parametrised over both backbones set it).
    "dit": {"layers": 2, "heads": 4, "head_dim": 16, "sample_size": 16},
    "scheduler": {"beta_schedule": "scaled_linear"},
}

BACKBONES = ["unet", "dit"]


def tiny_model_dict(**overrides) -> dict:
    data = copy.deepcopy(TINY_MODEL)
    for dotted, value in overrides.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return data


def build_tiny(**overrides):
    """Components of the tiny model (with `tiny_model_dict` overrides), seeded."""
    import torch

    from ldm.config import model_config_from_dict
    from ldm.models.components import build_components

    torch.manual_seed(0)
    return build_components(model_config_from_dict(tiny_model_dict(**overrides))).eval()
