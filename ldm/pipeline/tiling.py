"""Tiled VAE passes: a picture too large for one VAE pass is encoded and decoded in
overlapping tiles blended across their seams (diffusers' AutoencoderKL tiling, with our tile
size), so that the VAE's peak memory is one tile's whatever the picture's size.

A tiled pass differs slightly from a whole one: each tile's group norms and the decoder's
mid-block attention see that tile only, and the overlaps are blended linearly over a quarter
of a tile (docs/benchmarks.md measures the seams). So `auto` tiles only when one whole pass
would not fit in memory.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

TILING_CHOICES = ("auto", "on", "off")
TILE_PIXELS = 512  # the smallest tile side: Stable Diffusion's VAE's own size
OVERLAP = 0.25  # of a tile, blended with its neighbour (diffusers' default)


def vae_scale(vae_config) -> int:
    """Pixels per latent cell (8 for KL-f8)."""
    return 2 ** (len(vae_config.block_out_channels) - 1)


def tile_pixels(vae_config) -> int:
    """A tile's side in pixels: TILE_PIXELS, or the VAE's own size when larger; a whole number
    of 4 latent cells, so that a quarter-tile overlap is whole cells in pixels and latents
    alike (diffusers cuts tiles at int(side * 0.75) and keeps side - int(side * 0.25))."""
    own = vae_config.sample_size
    own = own[0] if isinstance(own, (list, tuple)) else own
    step = 4 * vae_scale(vae_config)
    return -(-max(TILE_PIXELS, own) // step) * step


@contextmanager
def tiled(vae, tile: Optional[int]) -> Iterator[None]:
    """Inside the block, `vae` (a diffusers AutoencoderKL) encodes and decodes pictures wider
    or taller than `tile` pixels in tiles of that side; None: whole, as outside."""
    if tile is None:
        yield
        return
    saved = vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor
    vae.tile_sample_min_size, vae.tile_latent_min_size = tile, tile // vae_scale(vae.config)
    vae.tile_overlap_factor = OVERLAP
    vae.enable_tiling()
    try:
        yield
    finally:
        vae.use_tiling, vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor = saved
