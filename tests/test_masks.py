"""Masks and canvases in pixel space: any image mode, threshold, blur, outpainting pad."""

import numpy as np
import pytest
from PIL import Image

from ldm.images import ImageError, load_image, mask_from_pil
from ldm.masks import as_mask, composite, extend_canvas, make_canvas


def square(mode: str, white, black, size=(16, 16)) -> Image.Image:
    image = Image.new(mode, size, black)
    image.paste(white, (4, 4, 12, 12))
    return image


EXPECTED = np.asarray(square("L", 255, 0))


@pytest.mark.parametrize(("mode", "white", "black"), [
    ("1", 1, 0),
    ("L", 255, 0),
    ("LA", (255, 255), (0, 255)),
    ("RGB", (255, 255, 255), (0, 0, 0)),
    ("RGBA", (255, 255, 255, 255), (0, 0, 0, 255)),
    ("RGBA", (255, 255, 255, 255), (255, 255, 255, 0)),  # white strokes on a transparent layer
    ("I;16", 65535, 0),
    ("I", 65535, 0),
])  # fmt: skip
def test_any_image_mode_gives_the_same_mask(mode, white, black):
    assert np.array_equal(np.asarray(as_mask(square(mode, white, black), (16, 16))), EXPECTED)


def test_a_palette_mask():
    palette = square("RGB", (255, 255, 255), (0, 0, 0)).convert("P")
    assert np.array_equal(np.asarray(as_mask(palette, (16, 16))), EXPECTED)


def test_grey_is_thresholded_at_one_half():
    mask = Image.new("L", (2, 1))
    mask.putdata([127, 128])
    canvas = make_canvas(Image.new("RGB", (2, 1)), mask, blur=0)
    assert list(canvas.repaint.getdata()) == [0, 255]
    assert mask_from_pil(mask).flatten().tolist() == [0.0, 1.0]


def test_blur_rounds_the_repainted_shape_and_feathers_beyond_it():
    canvas = make_canvas(Image.new("RGB", (16, 16)), square("L", 255, 0), blur=1.0)
    repaint, feather = np.asarray(canvas.repaint), np.asarray(canvas.feather)
    assert set(np.unique(repaint)) == {0, 255}
    assert repaint[8, 8] == 255 and repaint[0, 0] == 0
    assert 0 < feather[8, 3] < 255 and feather[8, 8] == 255 and feather[0, 0] == 0


def test_extend_canvas_fills_the_border_with_edge_pixels_and_marks_it_for_repainting():
    image = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(2, 2, 3))
    grown, mask = extend_canvas(image, Image.new("L", (2, 2), 0), (1, 0, 2, 1))
    assert grown.size == mask.size == (5, 3)
    array = np.asarray(grown)
    assert np.array_equal(array[0:2, 1:3], np.asarray(image))
    assert np.array_equal(array[0, 0], np.asarray(image)[0, 0]) and np.array_equal(array[2, 4], np.asarray(image)[1, 1])
    assert np.array_equal(np.asarray(mask) == 255, ~np.pad(np.ones((2, 2), bool), ((0, 1), (1, 2))))


def test_composite_is_exact_where_the_feather_is_zero():
    original = Image.fromarray(np.full((8, 8, 3), 10, np.uint8))
    result = Image.fromarray(np.full((4, 4, 3), 200, np.uint8))
    feather = Image.new("L", (8, 8), 0)
    feather.paste(255, (2, 2, 6, 6))
    feather.putpixel((2, 1), 128)
    out = np.asarray(composite(result, original, feather, (0, 0, 8, 8)))
    assert out[4, 4, 0] == 200 and out[0, 0, 0] == 10 and 10 < out[1, 2, 0] < 200
    assert (out[np.asarray(feather) == 0] == 10).all()


def test_load_image_names_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ImageError, match="mask file not found"):
        load_image(tmp_path / "nope.png", "mask")
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(ImageError, match="is not an image"):
        load_image(text)
