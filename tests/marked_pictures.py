"""Pictures with one marked rectangle, and a mask or control map marking the same rectangle:
after a bucket's crop, the mask's or map's marked pixels must be the picture's exactly."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from ldm.data import build_dataset
from ldm.data.config import DataConfig

# (width, height) of a picture -> an off-centre marked box (left, top, right, bottom): at
# data.resolution 32 the wide one goes to bucket 40x24, the tall one to 24x40.
MARKED = {(96, 64): (60, 8, 84, 40), (64, 96): (8, 56, 40, 88)}


def marked(size: tuple[int, int], box: tuple[int, int, int, int], mode: str = "RGB", scale: int = 1) -> Image.Image:
    """Black with a white `box`, drawn at `scale` times `size` (a mask or map of another size)."""
    image = Image.new(mode, (size[0] * scale, size[1] * scale))
    image.paste("white", tuple(side * scale for side in box))
    return image


def marked_folder(folder: Path, size: tuple[int, int]) -> Path:
    """An image folder of one marked picture of `size` (00000.png), with a caption."""
    folder.mkdir(parents=True, exist_ok=True)
    marked(size, MARKED[size]).save(folder / "00000.png")
    (folder / "00000.txt").write_text("a marked picture")
    return folder


def bucketed_sample(folder: Path) -> dict:
    """The folder's first sample as data.buckets crops it, with its batch keys."""
    data = DataConfig(path=str(folder), resolution=32, buckets=True, validation=0, caption_dropout=0.0)
    sample = build_dataset(data)[0]
    assert tuple(sample["pixels"].shape[-2:]) != (32, 32)  # a bucket's crop, not the square
    return {"pixels": sample["pixels"][None], "key": [sample["key"]], "original_size": sample["original_size"][None]}


def marked_share(pixels: torch.Tensor) -> torch.Tensor:
    """(H, W) in [0, 1] of a (3, H, W) picture in [-1, 1]: its red channel, marked = 1."""
    share = (pixels[0] + 1) / 2
    assert 0 < share.sum() < share.numel() / 2  # the mark survived the crop, off-centre
    return share
