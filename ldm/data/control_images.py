"""A sample's control image stored in the data itself (a datasets column, a webdataset key):
decoded like the image, resized to the image's size when it differs, then given the image's
own crop and flip (the same random draws), so that picture and map stay aligned.
`crop_as_picture` is that alignment alone: the training stages give it the maps of
controlnet.control_dir and masked loss's masks, read at each step by key."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from PIL import Image

from ldm.data.decode import Decoded, ImageSource, decode_image
from ldm.data.transforms import ImageTransform, Size


def paired_control(
    source: Optional[ImageSource], image: Image.Image, transform: ImageTransform, generator: Callable[[], Optional[torch.Generator]],
    size: Optional[Size] = None,
) -> Optional[torch.Tensor]:
    """(3, H, W) in [-1, 1] (the image's bucket `size`, or R x R), or None when the control image
    is missing or unreadable. `generator()` gives a fresh generator in the state the image's
    transform started from."""
    if source is None:
        return None
    decoded = decode_image(source)  # no minimum size: a map is resized to its image
    if decoded.image is None:
        return None
    return crop_as_picture(decoded.image, image.size, transform, generator(), size)


def crop_as_picture(
    control: Image.Image, picture_size: Size, transform: ImageTransform, generator: Optional[torch.Generator] = None,
    size: Optional[Size] = None,
) -> torch.Tensor:
    """(3, H, W) in [-1, 1]: `control` resized to its picture's `picture_size` (width, height)
    when it differs, then cropped (to the bucket `size`, or R x R) as `transform` cropped the
    picture: the same pixels, whatever the picture's aspect ratio. A grey map or mask is read as RGB."""
    control = control if control.mode == "RGB" else control.convert("RGB")
    if control.size != tuple(picture_size):
        control = control.resize(tuple(picture_size), Image.Resampling.BILINEAR)
    return transform(control, generator, size)


def with_control(
    decoded: Decoded, source: Optional[ImageSource], transform: ImageTransform, generator: Callable[[], Optional[torch.Generator]],
    size: Optional[Size] = None,
) -> tuple[Decoded, dict]:
    """A decoded sample and its map: (decoded, {"control": tensor}); a readable image whose map
    is missing or unreadable comes back skipped as "unreadable" (counted once, with the image)."""
    if decoded.image is None:
        return decoded, {}
    control = paired_control(source, decoded.image, transform, generator, size)
    if control is None:
        return Decoded(converted=decoded.converted, skipped="unreadable"), {}
    return decoded, {"control": control}
