"""Masked loss (kohya's masked_loss): a mask per sample weighs its per-pixel loss in latent space.

White counts fully, black not at all, grey in between (a transparent pixel counts as black, as
an inpainting mask reads). A mask is read by the sample's key at each step: NAME.mask.png beside
an image folder's NAME.jpg, or KEY.png in data.mask_dir (any source). It is cropped as its image
was (the data's centre crop: masked_loss refuses random crops and flips), scaled to the training
size (a mask of another size is resized, keeping its aspect ratio as its image's), then averaged
down to the latent size. A sample without a mask weighs 1 everywhere: the plain loss.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ldm.data.config import DataConfig
from ldm.data.errors import DataError
from ldm.data.imagefolder import MASK_SUFFIX
from ldm.images import ImageError, load_image
from ldm.masks import as_mask


class LossMasks:
    """batch keys -> (B, 1, h, w) loss weights in [0, 1] at the latents' size."""

    def __init__(self, mask_dir: Optional[Path], image_dir: Optional[Path]):
        self.mask_dir, self.image_dir = mask_dir, image_dir

    @classmethod
    def of(cls, data: DataConfig) -> Optional["LossMasks"]:
        """The data's masks, or None when data.masked_loss is off."""
        if not data.masked_loss:
            return None
        if data.mask_dir and not Path(data.mask_dir).is_dir():
            raise DataError(f"data.mask_dir is not a folder: {data.mask_dir}")
        return cls(Path(data.mask_dir), None) if data.mask_dir else cls(None, Path(data.path))

    def path(self, key: str) -> Path:
        stem = PurePosixPath(key).with_suffix("").as_posix()
        if self.mask_dir is not None:
            return self.mask_dir / f"{stem}.png"
        return self.image_dir / f"{stem}{MASK_SUFFIX}"

    def __call__(self, keys: list[str], pixel_size: tuple[int, int], latent_size: tuple[int, int]) -> torch.Tensor:
        """`pixel_size` (H, W): the training pictures'; `latent_size` (h, w): their latents'."""
        weights = [self.weight(key, pixel_size) for key in keys]
        pixel_masks = torch.stack(weights)[:, None]  # (B, 1, H, W)
        return F.interpolate(pixel_masks, size=latent_size, mode="area")  # (B, 1, h, w)

    def weight(self, key: str, pixel_size: tuple[int, int]) -> torch.Tensor:
        path = self.path(key)
        if not path.exists():
            return torch.ones(pixel_size)
        try:
            picture = load_image(path, "loss mask")
        except ImageError as error:
            raise DataError(str(error)) from None
        mask = fit_centre(as_mask(picture, picture.size), pixel_size)
        return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)  # (H, W) in [0, 1]


def fit_centre(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The centre of `mask` with the aspect ratio of `size` (H, W), resized to it: the crop the
    data's centre crop makes of an image of the mask's shape."""
    height, width = size
    scale = min(mask.width / width, mask.height / height)
    crop_w, crop_h = width * scale, height * scale
    left, top = (mask.width - crop_w) / 2, (mask.height - crop_h) / 2
    return mask.resize((width, height), Image.Resampling.BILINEAR, box=(left, top, left + crop_w, top + crop_h))
