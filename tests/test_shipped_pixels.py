"""The built-in models draw the same pixels for the same seeds as when the images in
tests/golden/ were saved: a guard for reshaping the code under them (issue 31), where any
change of behaviour, however small, must be a decision and not an accident.

After a change that is meant to move the pixels, write the images again and say why in the
commit:  python tests/test_shipped_pixels.py --write
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm.control.units import ControlUnit
from ldm.pipeline import Pipeline

GOLDEN = Path(__file__).parent / "golden"
LAYOUT_EXAMPLE = Path(__file__).parents[1] / "docs" / "layout-example.png"
PROMPT = "a meadow at dusk with two trees, mountains, a house and the sun on the left"
# Same machine, same libraries: the runs are bit-identical; a level of slack absorbs the
# last-bit differences another BLAS or CPU kernel might give.
MAX_LEVELS = 2


def _scene_picture() -> Image.Image:
    return Image.open(LAYOUT_EXAMPLE).convert("RGB").resize((128, 128))


def _mask() -> Image.Image:
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (40, 40, 100, 100))
    return mask


# name -> (model, how to draw one image with it)
CASES = {
    "txt2img-dpm": ("scenes", lambda p: p.generate(PROMPT, steps=6, seed=11, sampler="dpm++2m", progress=False)),
    "txt2img-euler-a": ("scenes", lambda p: p.generate("a lake at dawn", steps=5, seed=3, sampler="euler-a", cfg=4.0, progress=False)),
    "img2img": ("scenes", lambda p: p.img2img("a desert at night", _scene_picture(), 0.6, steps=6, seed=5, progress=False)),
    "inpaint": ("scenes", lambda p: p.inpaint("a snowy field at noon", _scene_picture(), _mask(), steps=6, seed=7, progress=False)),
    "lora": ("scenes", lambda p: p.generate("a simple picture of a green field at noon with a white windmill", steps=6, seed=2, loras=(("windmill-lora", 1.0),), progress=False)),
    "controlnet": ("scenes", lambda p: p.generate(PROMPT, steps=6, seed=4, controls=(ControlUnit(Image.open(LAYOUT_EXAMPLE), "layout"),), progress=False)),
    "lcm": ("scenes-lcm", lambda p: p.generate("a forest at noon", seed=9, progress=False)),
    "flow": ("scenes-flow", lambda p: p.generate("a lake at night with the moon on the right", steps=6, seed=6, progress=False)),
}

_pipelines: dict[str, Pipeline] = {}


def draw(name: str) -> np.ndarray:
    model, run = CASES[name]
    if model not in _pipelines:
        _pipelines[model] = Pipeline.load(model)
    return np.asarray(run(_pipelines[model]).images[0].convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("name", sorted(CASES))
def test_builtin_models_draw_the_saved_pixels(name):
    expected = np.asarray(Image.open(GOLDEN / f"{name}.png").convert("RGB"), dtype=np.int16)
    drawn = draw(name)
    assert drawn.shape == expected.shape
    difference = np.abs(drawn - expected)
    assert difference.max() <= MAX_LEVELS, f"{name}: {int((difference > MAX_LEVELS).sum())} values differ, by up to {difference.max()} levels"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.mkdir(exist_ok=True)
    for case in CASES:
        Image.fromarray(draw(case).astype(np.uint8)).save(GOLDEN / f"{case}.png")
        print("wrote", GOLDEN / f"{case}.png")
