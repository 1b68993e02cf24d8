"""How much memory one generated image needs, and how much there is: the pipeline uses both to
refuse a request that cannot fit before any work, and to run --n in batches that fit.

An estimate, not a measurement: activations grow linearly with the pixel count (attention
runs through PyTorch's fused kernels, which do not build the (tokens x tokens) matrix), so
each term is (cells at that resolution) x (channels there) x (bytes) x (live tensors).
"""

from __future__ import annotations

import torch

# Live activation tensors at the widest level of a denoiser step (resnet halves, attention
# q/k/v/out, the 4x feed-forward) and of the VAE decoder's last block; rough, on the high side.
DENOISER_LIVE_TENSORS = 32
DECODER_LIVE_TENSORS = 6
CPU_SHARE = 0.5  # of the memory the OS reports available: leave room for everything else
GPU_SHARE = 0.8


def image_bytes(components, width: int, height: int, guided: bool) -> int:
    """Peak bytes one image of width x height adds to a batch (denoiser step or VAE decode)."""
    vae, denoiser = components.vae.config, components.denoiser.config
    dtype_bytes = torch.empty((), dtype=components.dtype).element_size()
    scale = 2 ** (len(vae.block_out_channels) - 1)
    cells = (width // scale) * (height // scale)
    widest = getattr(denoiser, "block_out_channels", None) or [denoiser.num_attention_heads * denoiser.attention_head_dim]
    denoise = cells * widest[0] * dtype_bytes * DENOISER_LIVE_TENSORS * (2 if guided else 1)
    decode = width * height * vae.block_out_channels[0] * dtype_bytes * DECODER_LIVE_TENSORS
    return max(denoise, decode)


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
