"""Low-rank adapters for training (through peft) and the LoRA files they become.

peft injects the adapters (lora_A, lora_B per targeted layer) and keeps the rest frozen; a
finished LoRA is written in the key layout other tools read (ldm.lora.apply reads both back):
  kohya   lora_unet_<module_with_underscores>.lora_down.weight / .lora_up.weight / .alpha
  peft    unet.<module>.lora_A.weight / .lora_B.weight  (diffusers' layout: alpha = rank)
with the training facts in the file's metadata (strings, as kohya's ss_* keys are)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ldm.files import writing_file

# The U-Net's attention projections: what LoRAs for Stable Diffusion usually adapt.
ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
PREFIXES = {
    "kohya": {"denoiser": "lora_unet_", "text_encoder": "lora_te_", "text_encoder_2": "lora_te2_"},
    "peft": {"denoiser": "unet.", "text_encoder": "text_encoder.", "text_encoder_2": "text_encoder_2."},
}


def target_modules(model: nn.Module, targets: str) -> list[str]:
    """peft's target list: `attention` (the projections above) or `all` (every Linear and
    Conv2d of the model, the names given in full)."""
    if targets == "attention":
        return ATTENTION_TARGETS
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]


def text_encoder_targets(encoder: nn.Module) -> list[str]:
    """Every Linear layer of a text encoder that shapes its output, but those inside
    nn.MultiheadAttention (open_clip's attention): it reads their weights directly, so an
    adapter there would train nothing, yet a merged file would change them. open_clip: the
    MLPs of the blocks up to the one read (`layer_index`: penultimate skips the last);
    HF CLIP: q/k/v/out and the MLPs. An adapter that never gets a gradient would also stop
    multi-process training (DDP's unused-parameter error)."""
    inside_attention = {
        f"{name}.{child}" for name, module in encoder.named_modules() if isinstance(module, nn.MultiheadAttention)
        for child, _ in module.named_modules() if child
    }  # fmt: skip
    last = getattr(encoder, "layer_index", None)

    def read(name: str) -> bool:
        block = re.search(r"resblocks\.(\d+)\.", name)
        return last is None or block is None or int(block.group(1)) <= last

    return [
        name for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear) and name not in inside_attention and read(name)
    ]  # fmt: skip


def add_lora_adapters(model: nn.Module, rank: int, alpha: float, targets: str | list[str], seed: int) -> None:
    """Injects rank-`rank` adapters (B zero: the model is unchanged until trained); only they
    train. `targets`: a target_modules name, or the module names themselves."""
    from peft import LoraConfig, inject_adapter_in_model

    names = target_modules(model, targets) if isinstance(targets, str) else targets
    model.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # A's initialisation, the same in every process and on resume
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=alpha, target_modules=names), model)


def set_adapters_enabled(model: nn.Module, enabled: bool) -> None:
    """Switches every adapter of `model` on or off (the base model, exactly, when off)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)


def lora_tensors(
    model: nn.Module, part: str, layout: str, rank: int, alpha: float, within: str = "", named_as: str = "",
    prefix: str = "", kohya_name: Callable[[str], str] | None = None,
) -> dict[str, torch.Tensor]:
    """The adapters of `model` (the Components part `part`) as a LoRA file's tensors, named
    from inside `within` (a wrapper's attribute, e.g. "model.") and under `named_as`, after
    `prefix` (default: the part's in `layout`; an MMDiT's is "transformer."). kohya: `kohya_name` gives a module's dotted name
    in the file (SDXL's original U-Net blocks). The peft layout has no alpha (diffusers reads
    it as alpha = rank): alpha / rank is folded into B."""
    from peft.utils import get_peft_model_state_dict

    tensors, prefix = {}, prefix or PREFIXES[layout][part]
    for key, tensor in get_peft_model_state_dict(model).items():
        module, kind = key.removeprefix(within).rsplit(".lora_", 1)  # "down_blocks...to_q", "A.weight" or "B.weight"
        module = named_as + module
        if layout == "kohya":
            stem = prefix + (kohya_name(module) if kohya_name else module).replace(".", "_")
            tensors[f"{stem}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = tensor
            tensors[f"{stem}.alpha"] = torch.tensor(float(alpha))
        else:
            scale = alpha / rank if kind.startswith("B") else 1.0
            tensors[f"{prefix}{module}.lora_{kind}"] = tensor * scale
    return tensors


def write_lora_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict, dtype: torch.dtype = torch.float16) -> Path:
    """Writes the LoRA file in one rename (no half-written file); fp16 as most shared LoRAs are."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    text = {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}
    half = {key: tensor.detach().to(dtype).contiguous() for key, tensor in tensors.items()}
    with writing_file(path) as temp:
        save_file(half, str(temp), metadata=text)
    return path
