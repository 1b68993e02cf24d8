"""Faster forms of the same model for sampling: channels-last memory (NHWC convolutions,
which oneDNN and cuDNN prefer) and torch.compile of the denoiser and the VAE decoder; and
whether the processor computes bf16 natively (where `--dtype auto` can take it). Measured
side by side against diffusers' pipeline by tools/bench_generate.py (docs/benchmarks.md)."""

from __future__ import annotations

import torch

from ldm.models.components import Components


def native_bf16(device: torch.device) -> bool:
    """bf16 matmuls in hardware: AMX or AVX512-BF16 CPUs, Ampere-or-later GPUs. Elsewhere bf16
    is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return False


def speed_up(components: Components, channels_last: bool = True, compile: bool = False, backend: str = "inductor") -> Components:
    """In place, the parameters stay the same objects (LoRA merges and scopes still reach
    them); compiling is lazy: the first image pays for it (minutes on a CPU)."""
    if channels_last:
        for module in (components.denoiser, components.vae):
            module.to(memory_format=torch.channels_last)
    if compile:
        # dynamic: one compiled graph for every size and batch. Measured (scenes, 2-core CPU):
        # as fast per image as a static graph, and a new size runs at once instead of
        # recompiling for 90 s. Without duck shapes, sizes that happen to be equal when it
        # compiles (a batch of 2 and 2 steps, a square) are not assumed equal ever after.
        torch.fx.experimental._config.use_duck_shape = False
        components.denoiser.compile(backend=backend, dynamic=True)  # in place: state dict names unchanged
        components.vae.decoder.compile(backend=backend, dynamic=True)
    return components
