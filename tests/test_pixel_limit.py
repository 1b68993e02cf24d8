"""The pixel limit (Limits.max_pixels) counts a picture's pixels, width x height, on every
path of the Python API that checks it: a picture of exactly the limit is made, one of a
pixel more is refused before any work. A check on latent cells (64x fewer with SD's VAE,
4x with the tiny model's) lets the larger one through, and fails here."""

import pytest
from PIL import Image

from ldm.pipeline import Pipeline
from ldm.settings import GenerationError, Limits

SIZE = 32  # the tiny model's own size, and the photo's


@pytest.fixture
def backbone():
    return "unet"  # the limit is the pipeline's, not the denoiser's


def lower_half(size=(SIZE, SIZE)):
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, size[1] // 2, size[0], size[1]))
    return mask


# Each path, and the width x height it checks (always SIZE x SIZE).
PATHS = {
    "txt2img, width and height given": lambda pipe, photo, **kw: pipe.generate("a lake", width=SIZE, height=SIZE, **kw),
    "txt2img at the model's size": lambda pipe, photo, **kw: pipe.generate("a lake", **kw),
    "img2img at the picture's size": lambda pipe, photo, **kw: pipe.img2img("a lake", photo, **kw),
    "img2img, a small picture at the size given": lambda pipe, photo, **kw: pipe.img2img(
        "a lake", photo.resize((8, 8)), width=SIZE, height=SIZE, **kw
    ),
    "inpaint at the picture's size": lambda pipe, photo, **kw: pipe.inpaint("a lake", photo, lower_half(), **kw),
    "inpaint a crop at the model's size": lambda pipe, photo, **kw: pipe.inpaint(
        "a lake", photo.resize((8, 8)), lower_half((8, 8)), crop_to_mask=0, **kw
    ),
    "outpaint: the grown canvas": lambda pipe, photo, **kw: pipe.inpaint("a lake", photo.crop((0, 0, SIZE - 8, SIZE)), pad=(8, 0, 0, 0), **kw),
}


@pytest.mark.parametrize("path", PATHS)
def test_exactly_the_limit_is_made_one_pixel_more_is_refused(tiny_components, photo, path):
    pipe = Pipeline(tiny_components)
    run = PATHS[path]
    result = run(pipe, photo, steps=1, seed=0, progress=False, limits=Limits(max_pixels=SIZE * SIZE))
    assert len(result.images) == 1
    steps = []
    with pytest.raises(GenerationError, match=f"{SIZE}x{SIZE} is 0.0 megapixels, over the limit"):
        run(pipe, photo, steps=1, seed=0, progress=False, limits=Limits(max_pixels=SIZE * SIZE - 1), callback=steps.append)
    assert steps == []
