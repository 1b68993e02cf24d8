"""How much memory one generated image needs, and how much there is: the pipeline uses both to
refuse a request that cannot fit before any work, and to run --n in batches that fit.

An estimate, not a measurement: activations grow linearly with the pixel count (attention
runs through PyTorch's fused kernels, which do not build the (tokens x tokens) matrix), so
each term is (cells at that resolution) x (channels there) x (bytes) x (live tensors).
"""

from __future__ import annotations

from typing import Optional

import torch

# Live activation tensors at the widest level of a denoiser step (resnet halves, attention
# q/k/v/out, the 4x feed-forward); rough, on the high side.
DENOISER_LIVE_TENSORS = 32
# The decoder's peak is at full resolution, where the last upsampler's output (the second
# level's channels) meets the last block's norm and activation: about 4 tensors of those
# channels (the built-in VAE measured 495 MiB at 1024 px, 2047 MiB at 2048 px, fp32;
# tools/bench_vae_tiling.py).
DECODER_LIVE_TENSORS = 4
# Copies of the whole decoded picture (3 channels) a tiled decode holds at its peak: the
# overlapping tiles (16/9 of the picture with quarter overlaps), their blends, the result.
TILED_PICTURE_COPIES = 4
CPU_SHARE = 0.5  # of the memory the OS reports available: leave room for everything else
GPU_SHARE = 0.8


def image_bytes(components, width: int, height: int, guided: bool, vae_tile: Optional[int] = None) -> int:
    """Peak bytes one image of width x height adds to a batch (denoiser step or VAE pass);
    `vae_tile`: the VAE works in tiles of that side (ldm.pipeline.tiling)."""
    return max(denoiser_bytes(components, width, height, guided), vae_bytes(components, width, height, vae_tile))


def denoiser_bytes(components, width: int, height: int, guided: bool) -> int:
    """Peak bytes of one image's denoiser step: its widest level's live activations."""
    vae, denoiser = components.vae.config, components.denoiser.config
    scale = 2 ** (len(vae.block_out_channels) - 1)
    cells = (width // scale) * (height // scale)
    widest = getattr(denoiser, "block_out_channels", None) or [denoiser.num_attention_heads * denoiser.attention_head_dim]
    return cells * widest[0] * _dtype_bytes(components) * DENOISER_LIVE_TENSORS * (2 if guided else 1)


def vae_bytes(components, width: int, height: int, tile: Optional[int] = None) -> int:
    """Peak bytes of one image's VAE decode (an encode needs no more): the decoder's last,
    full-resolution block over the picture, or over one tile plus the decoded tiles kept for
    blending (they overlap, so they hold more pixels than the picture)."""
    channels, dtype_bytes = max(components.vae.config.block_out_channels[:2]), _dtype_bytes(components)
    if tile is None:
        return width * height * channels * dtype_bytes * DECODER_LIVE_TENSORS
    one_tile = min(width, tile) * min(height, tile) * channels * dtype_bytes * DECODER_LIVE_TENSORS
    return one_tile + width * height * 3 * dtype_bytes * TILED_PICTURE_COPIES


def _dtype_bytes(components) -> int:
    return torch.empty((), dtype=components.dtype).element_size()


def available_bytes(device: torch.device) -> int:
    """What a batch may use on `device`."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * GPU_SHARE)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * CPU_SHARE)
    except OSError:
        pass
    return 8 * 2**30  # not Linux: assume a modest machine


def gib(count: int) -> str:
    return f"{count / 2**30:.1f} GiB"
