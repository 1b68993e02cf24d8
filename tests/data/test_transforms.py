import numpy as np
import pytest
import torch
from PIL import Image

from ldm.data.randomness import sample_generator
from ldm.data.transforms import ImageTransform


def stripes(width: int, height: int) -> Image.Image:
    """Column x has the value x: crops and flips show as offsets of the first column."""
    columns = np.tile(np.arange(width, dtype=np.uint8), (height, 1))
    return Image.fromarray(np.stack([columns] * 3, axis=-1), "RGB")


def first_column_value(pixels: torch.Tensor) -> float:
    return float((pixels[0, :, 0].mean() + 1) * 127.5)


def test_output_is_a_square_in_minus_one_to_one():
    pixels = ImageTransform(32)(stripes(200, 100))
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1


def test_shorter_side_is_resized_and_the_centre_kept():
    # 100x50 -> 64x32: the centre crop starts 16 resized columns = 25 source columns in.
    pixels = ImageTransform(32)(stripes(100, 50))
    assert abs(first_column_value(pixels) - 25.5) < 1.5


def test_downscaling_is_antialiased():
    # A one-pixel checkerboard averages to grey; without antialiasing it would alias.
    board = (np.indices((256, 256)).sum(axis=0) % 2 * 255).astype(np.uint8)
    pixels = ImageTransform(16)(Image.fromarray(board).convert("RGB"))
    assert pixels.abs().max() < 0.1


def test_random_crop_and_flip_follow_the_generator():
    transform = ImageTransform(32, crop="random", flip=True)
    image = stripes(200, 32)
    draws = [transform(image, sample_generator(0, 0, index, "transform")) for index in range(40)]
    again = [transform(image, sample_generator(0, 0, index, "transform")) for index in range(40)]
    assert all(torch.equal(a, b) for a, b in zip(draws, again))
    offsets = {round(first_column_value(p)) for p in draws}
    assert len(offsets) > 10  # many different crops
    flipped = [p for p in draws if p[0, 0, 0] > p[0, 0, -1]]
    assert 5 < len(flipped) < 35


def test_random_transforms_refuse_global_randomness():
    with pytest.raises(ValueError, match="generator"):
        ImageTransform(32, crop="random")(stripes(64, 32))
