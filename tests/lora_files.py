"""LoRA files for tests: random low-rank weights for a tiny U-Net's attention, in either key layout."""

import torch
from safetensors.torch import save_file

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
RANK, ALPHA = 4, 8.0


def random_lora(components, seed=0) -> dict[str, torch.Tensor]:
    """peft-layout weights (module -> A, B) for the U-Net's attention linears, B not zero."""
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for name, module in components.denoiser.named_modules():
        if any(name.endswith("." + t) for t in TARGETS) and isinstance(module, torch.nn.Linear):
            weights[name] = (
                torch.randn(RANK, module.in_features, generator=generator) * 0.3,
                torch.randn(module.out_features, RANK, generator=generator) * 0.3,
            )
    return weights


def write_lora(weights, path, layout):
    state = {}
    for name, (a, b) in weights.items():
        if layout == "peft":
            # diffusers' layout has no alpha keys: alpha = rank.
            state[f"unet.{name}.lora_A.weight"], state[f"unet.{name}.lora_B.weight"] = a, b
        else:
            stem = "lora_unet_" + name.replace(".", "_")
            state[f"{stem}.lora_down.weight"], state[f"{stem}.lora_up.weight"] = a, b
            state[f"{stem}.alpha"] = torch.tensor(ALPHA)
    save_file(state, str(path))
    return path
