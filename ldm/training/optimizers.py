"""train.optimizer: what updates the trained parameters, and what its state costs.

adamw      torch's AdamW (two fp32 states a parameter; the fused kernel on CUDA)
adamw8bit  bitsandbytes' 8-bit AdamW (two 1-byte states a parameter; CUDA, where installed)
adafactor  transformers' Adafactor with our LR schedule (no first moment; the second moment
           of a matrix kept as its row and column sums: a few bytes a row)

train.allow_tf32 lets CUDA matmuls and convolutions run in TF32 (Ampere and later): faster
fp32, a 10-bit mantissa inside the products."""

from __future__ import annotations

import importlib.util
import math

import torch

from ldm.config import ConfigError

OPTIMIZERS = ("adamw", "adamw8bit", "adafactor")
BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes' default: smaller tensors keep 32-bit states


def check_optimizer(name: str, device: torch.device | None = None) -> None:
    """One line for an optimizer this install or device cannot run, before anything is built
    (the name itself is checked with the config)."""
    if name == "adamw8bit":
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("train.optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes), which is not installed")
        if device is not None and device.type != "cuda":
            raise ConfigError(f"train.optimizer adamw8bit runs on CUDA GPUs; this run is on {device.type}")


def build_optimizer(train_section, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    name, lr, decay = train_section.optimizer, train_section.lr, train_section.weight_decay
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # Our LR schedule drives it: no relative step size, no parameter-scale factor.
        return Adafactor(parameters, lr=lr, weight_decay=decay, scale_parameter=False, relative_step=False, warmup_init=False)
    betas = tuple(train_section.adam_betas)
    if name == "adamw8bit":
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(parameters, lr=lr, betas=betas, weight_decay=decay)
    fused = bool(parameters) and all(p.is_cuda and p.is_floating_point() for p in parameters)
    return torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=decay, fused=fused or None)


def state_bytes(name: str, shapes: list[torch.Size]) -> int:
    """Bytes of optimizer state for trained parameters of these shapes."""
    if name == "adamw":
        return sum(8 * math.prod(shape) for shape in shapes)
    if name == "adamw8bit":  # two uint8 states and a float32 scale per block of 256; small tensors stay 32-bit
        sizes = [math.prod(shape) for shape in shapes]
        return sum(8 * n if n < BNB_MIN_8BIT_SIZE else 2 * n + 8 * math.ceil(n / 256) for n in sizes)
    total = 0
    for shape in shapes:  # Adafactor (beta1 None): factored rows and columns of a matrix, else the whole
        if len(shape) >= 2:
            total += 4 * (math.prod(shape[:-1]) + math.prod(shape[:-2]) * shape[-1])
        else:
            total += 4 * math.prod(shape)
    return total


def apply_tf32(allow: bool) -> None:
    """train.allow_tf32 for this process's CUDA matmuls and convolutions."""
    if allow:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
