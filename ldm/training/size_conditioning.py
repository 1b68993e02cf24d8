"""SDXL's size conditioning in training: each sample's time ids (original height, width, crop
top, left, target height, width), in the order diffusers' SDXL pipelines and training script
build them.

The data tells the source image's size and where it was cropped (batch keys `original_size`
and `crop_top_left`, LongTensors (B, 2) as [height, width] and [top, left]: aspect-ratio
buckets fill them); without them the image is taken as uncropped at the training size
(original = target, crop 0,0: what sampling assumes by default). The target size is the
batch's own pixel size."""

from __future__ import annotations

from typing import Optional

import torch

from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.conditioning import Conditioning
from ldm.training.latents import CacheExtras

ORIGINAL_SIZE, CROP_TOP_LEFT = "original_size", "crop_top_left"


def takes_time_ids(denoiser) -> bool:
    return getattr(backbone_of(denoiser), "takes_time_ids", False)


def training_time_ids(batch: dict, target: tuple[int, int], device=None) -> torch.Tensor:
    """(B, 6) float time ids for the batch, whose pictures are `target` (height, width) pixels."""
    b = len(batch["caption"])
    target_ids = torch.tensor(target, dtype=torch.long).expand(b, 2)  # (B, 2)
    original = batch.get(ORIGINAL_SIZE)
    crop = batch.get(CROP_TOP_LEFT)
    original = target_ids if original is None else torch.as_tensor(original).reshape(b, 2)
    crop = torch.zeros(b, 2, dtype=torch.long) if crop is None else torch.as_tensor(crop).reshape(b, 2)
    return torch.cat([original.long(), crop.long(), target_ids], dim=1).float().to(device)  # (B, 6)


def with_training_sizes(cond: Conditioning, batch: dict, latents: torch.Tensor, vae, denoiser) -> Conditioning:
    """`cond` with the batch's time ids when the denoiser reads them (an SDXL U-Net); as it is otherwise."""
    if not takes_time_ids(denoiser):
        return cond
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    target = (latents.shape[-2] * factor, latents.shape[-1] * factor)  # the pictures' (height, width)
    return cond.with_vector("time_ids", training_time_ids(batch, target, latents.device))


def size_cache_extras() -> CacheExtras:
    """The latent cache keeps each sample's original size and crop beside its latents (when
    the data gives them), so cached epochs condition as the first one did."""

    def compute(batch: dict) -> dict[str, torch.Tensor]:
        return {key: torch.as_tensor(batch[key]) for key in (ORIGINAL_SIZE, CROP_TOP_LEFT) if key in batch}  # (B, 2) each

    return CacheExtras(compute, {"sizes": [ORIGINAL_SIZE, CROP_TOP_LEFT], "version": 1})


def picture_sizes(batch: dict, count: int) -> list[Optional[tuple[int, int]]]:
    """Each sample's picture as decoded, (width, height), from the batch's `original_size`;
    None each when the batch does not say (a mask or map is then taken as its picture's size)."""
    original = batch.get(ORIGINAL_SIZE)
    if original is None:
        return [None] * count
    return [(int(width), int(height)) for height, width in torch.as_tensor(original).reshape(count, 2).tolist()]
