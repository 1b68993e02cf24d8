"""Wires ldm.data's latent cache into text2img: the frozen VAE encodes every image once;
later epochs and later runs read (mean, std) from disk. The cache key includes a
fingerprint of the VAE weights, so a changed VAE misses the cache instead of reusing it.

The calls below follow the interface agreed with ldm.data (branch `data`); check them
against the merged module."""

from __future__ import annotations

from pathlib import Path

import torch


def vae_encoder(vae, device: torch.device):
    @torch.no_grad()
    def encode(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = vae.encode(pixels.to(device)).latent_dist
        return posterior.mean.cpu(), posterior.std.cpu()  # each (B, 4, r, r), unscaled

    return encode


def cached_latents(dataset, vae, directory: Path, config, device: torch.device, is_main: bool):
    from ldm.data.latent_cache import CachedLatentDataset, LatentCache, build_latent_cache, cache_key, fingerprint_module

    key = cache_key(config.data, fingerprint_module(vae))
    cache = LatentCache(Path(directory), key)
    if is_main:
        build_latent_cache(dataset, vae_encoder(vae, device), cache, config.train.batch_size, progress=config.train.progress)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # the other processes read what the main one wrote
    return CachedLatentDataset(cache)
