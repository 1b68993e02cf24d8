"""The generation modes as tasks: the size a task says it draws at (what ldm-serve's work
estimate reads) is the size the pipeline draws at, and a new mode is a task over `run`."""

import numpy as np
import pytest
from PIL import Image

from ldm.pipeline import Pipeline
from ldm.pipeline.modes import task_for
from ldm.pipeline.task import Plan, Start


@pytest.mark.parametrize(
    "mode, size, options, expected",
    [
        ("txt2img", None, {}, (32, 32)),  # the model's own size
        ("txt2img", None, {"width": 48, "height": 24}, (48, 24)),
        ("img2img", (70, 50), {}, (72, 48)),  # the image's, in multiples of 8
        ("img2img", (70, 50), {"width": 32}, (32, 24)),  # its aspect kept
        ("inpaint", (70, 50), {}, (72, 48)),
        ("inpaint", (40, 40), {"pad": (8, 0, 16, 4)}, (64, 48)),  # the canvas grown by the pad
        ("inpaint", (70, 50), {"crop_to_mask": 4}, (32, 32)),  # a crop at the model's size
        ("inpaint", (70, 50), {"crop_to_mask": 4, "width": 24, "height": 40}, (24, 40)),
    ],
)
def test_a_task_draws_at_the_size_it_says(tiny_unet_components, mode, size, options, expected):
    """The sizes are the ones ldm-serve's estimate computed on its own before tasks said them."""
    pipe = Pipeline(tiny_unet_components)
    image = None if size is None else Image.new("RGB", size, (120, 80, 40))
    mask = None
    if mode == "inpaint":
        mask = Image.new("L", size, 0)
        mask.paste(255, (10, 10, 30, 30))
    drawn = []
    original = pipe.sample
    pipe.sample = lambda request: drawn.append(tuple(request.noise.shape[-2:])) or original(request)
    task = task_for(mode, image, mask)
    settings = pipe.request("a lake", {"steps": 1, "seed": 0, **options})
    pipe.run(task, settings, progress=False)
    assert task.draw_size(pipe, settings) == expected
    assert drawn == [(expected[1] // pipe.vae_scale, expected[0] // pipe.vae_scale)]


def test_a_new_mode_is_a_task_over_run(tiny_unet_components):
    """A task that starts from the same noise as txt2img and finishes by flipping the images
    draws txt2img's pictures flipped: run does the rest (text, sampling, decoding, batching)."""

    class Flipped:
        mode = "txt2img"

        def plan(self, pipe, settings, limits, notes):
            def start(pipe, generators, batch):
                return Start(pipe.noise(generators, 32, 32))

            def finish(images):
                return [each.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for each in images]

            return Plan(settings, (32, 32), (32, 32), start, finish=finish)

    pipe = Pipeline(tiny_unet_components)
    settings = pipe.request("a lake", {"steps": 2, "seed": 3, "n": 2, "width": 32, "height": 32})
    flipped = pipe.run(Flipped(), settings, progress=False)
    plain = pipe.generate(settings, progress=False)
    for ours, theirs in zip(flipped.images, plain.images):
        assert np.array_equal(np.asarray(ours), np.asarray(theirs.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    assert flipped.seeds == plain.seeds == [3, 4]


def test_an_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="not a generation mode: 'sketch'"):
        task_for("sketch")  # (upscale is one since issue 26)
