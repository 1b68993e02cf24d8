"""Masked loss (kohya's masked_loss): a mask per sample weighs its per-pixel loss in latent space.

White counts fully, black not at all, grey in between (a transparent pixel counts as black, as
an inpainting mask reads). A mask is read by the sample's key at each step: NAME.mask.png beside
an image folder's NAME.jpg, or KEY.png in data.mask_dir (any source). It is resized to its
picture's size when it differs, then cropped as the picture was (ldm.data.control_images.
crop_as_picture: the data's centre crop to the square or to the sample's aspect-ratio bucket;
masked_loss refuses random crops and flips), then averaged down to the latent size. A sample
without a mask weighs 1 everywhere: the plain loss.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Optional

import torch
import torch.nn.functional as F

from ldm.data.config import DataConfig
from ldm.data.control_images import crop_as_picture
from ldm.data.errors import DataError
from ldm.data.imagefolder import MASK_SUFFIX
from ldm.data.transforms import ImageTransform, Size
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

    def __call__(
        self, keys: list[str], pixel_size: tuple[int, int], latent_size: tuple[int, int], pictures: Optional[list[Optional[Size]]] = None,
    ) -> torch.Tensor:
        """`pixel_size` (H, W): the training pictures'; `latent_size` (h, w): their latents';
        `pictures`: each sample's picture as decoded, (width, height) (None: the mask's own)."""
        pictures = pictures or [None] * len(keys)
        weights = [self.weight(key, pixel_size, picture) for key, picture in zip(keys, pictures)]
        pixel_masks = torch.stack(weights)[:, None]  # (B, 1, H, W)
        return F.interpolate(pixel_masks, size=latent_size, mode="area")  # (B, 1, h, w)

    def weight(self, key: str, pixel_size: tuple[int, int], picture: Optional[Size] = None) -> torch.Tensor:
        path = self.path(key)
        if not path.exists():
            return torch.ones(pixel_size)
        try:
            loaded = load_image(path, "loss mask")
        except ImageError as error:
            raise DataError(str(error)) from None
        mask = as_mask(loaded, loaded.size)
        height, width = pixel_size
        # The data's centre crop, whose square size does not matter: `size` sets the crop.
        cropped = crop_as_picture(mask, picture or mask.size, ImageTransform(max(pixel_size)), None, (width, height))
        return (cropped[0] + 1) / 2  # (H, W) in [0, 1]
