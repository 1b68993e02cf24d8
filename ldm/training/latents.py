"""Wires ldm.data's latent cache into text2img: the frozen VAE encodes every image once;
later epochs and later runs read (mean, std) from disk. The cache key covers the VAE's
weights and the dataset's description, so a changed VAE (or data) misses the cache
instead of reusing stale latents. Random crops/flips cannot be cached: ldm.data warns
and the images are then encoded every step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from ldm.data.latent_cache import CachedLatentDataset, ExtrasFn, LatentCache, build_latent_cache, cache_allowed, cache_key, fingerprint_module


@dataclass
class CacheExtras:
    """Tensors a stage computes once per sample and keeps beside the latents: `compute` makes
    them from a caching batch; `description` (part of the cache key) says what they are."""

    compute: ExtrasFn
    description: dict


def encode_in_full_precision(vae, pixels: torch.Tensor):
    """The frozen VAE's posterior of `pixels`, computed outside autocast in the VAE's own
    (fp32) dtype: under fp16 mixed precision SD's VAE encoder overflows to inf/NaN (diffusers
    keeps its VAE in fp32 for the same reason), and encoding costs little beside the step."""
    with torch.no_grad(), torch.autocast(pixels.device.type, enabled=False):
        return vae.encode(pixels.to(vae.dtype)).latent_dist


def vae_encoder(vae, device: torch.device):
    @torch.no_grad()
    def encode(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = encode_in_full_precision(vae, pixels.to(device))
        return posterior.mean.cpu(), posterior.std.cpu()  # each (B, 4, r, r), unscaled

    return encode


def cached_latents(dataset, vae, directory: Path, config, context, extras: Optional[CacheExtras] = None):
    """The dataset's latents (and `extras`), from `directory` (built there first when missing or stale)."""
    description = dataset.describe()
    if not cache_allowed(description):
        return dataset
    key_description = {**description, "extras": extras.description} if extras else description
    cache = LatentCache(Path(directory), cache_key(fingerprint_module(vae), key_description))
    if context.is_main:
        build_latent_cache(
            dataset, vae_encoder(vae, context.device), cache, config.train.batch_size, progress=config.train.progress,
            extras_fn=extras.compute if extras else None,
        )  # fmt: skip
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # the other processes read what the main one wrote
    # Caption dropout 0: text2img drops captions itself, per step. The cache holds every caption
    # as written; data.captions rearranges the drawn one at read time, anew each epoch.
    bucketed = getattr(dataset, "buckets", None) is not None
    return CachedLatentDataset(cache, caption_dropout=0.0, seed=config.train.seed, captions=config.data.captions, bucketed=bucketed)
