"""The upscaler's colour fix: the input's broad colours under the drawn detail. A drift over
flat areas goes, detail finer than the low band stays; a model's default and the request's
choice; the PNG records it."""

import numpy as np
import pytest
from PIL import Image

from ldm.images import from_pil
from ldm.pipeline import Pipeline
from ldm.pipeline.color_fix import color_fixed, low_band
from ldm.settings import parse_on_off
from tiny import build_tiny_upscaler


def pixels(picture: Image.Image) -> np.ndarray:
    return np.asarray(picture.convert("RGB"), dtype=float)


def test_a_colour_drift_goes_and_the_detail_stays():
    source = Image.new("RGB", (16, 16), (90, 140, 200))
    stripes = np.zeros((64, 64, 3))
    stripes[:, ::2] = 40  # a one-pixel pattern: far finer than the low band
    drifted = np.clip(pixels(source.resize((64, 64))) + [25, -20, 15] + stripes, 0, 255).astype(np.uint8)
    fixed = pixels(color_fixed(Image.fromarray(drifted), source, sigma=4))
    assert np.abs(fixed.mean(axis=(0, 1)) - [90, 140, 200]).max() < 2  # the drift (and the stripes' own mean) gone
    assert abs((fixed[:, ::2] - fixed[:, 1::2]).mean() - 40) < 2  # the stripes kept at full contrast


def test_the_low_band_keeps_a_flat_picture_and_its_mean():
    flat = from_pil([Image.new("RGB", (20, 12), (10, 200, 30))])
    assert (low_band(flat, 3) - flat).abs().max() < 1e-6
    noisy = from_pil([Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))])
    assert abs(float(low_band(noisy, 2).mean() - noisy.mean())) < 0.02 and low_band(noisy, 2).std() < noisy.std() / 3


@pytest.fixture(scope="module")
def upscaler():
    return build_tiny_upscaler()


def test_the_models_default_and_the_request_decide_and_the_png_says(upscaler):
    pipe = Pipeline(upscaler)
    low_res = Image.fromarray(np.random.default_rng(1).integers(0, 255, (12, 16, 3), dtype=np.uint8))
    options = dict(steps=2, seed=3, sampler="ddim", progress=False)
    plain = pipe.upscale("a lake", low_res, **options)
    assert plain.parameters[0].fields()["Color fix"] == "off"  # a random tiny model: off by default, as SD's x4
    fixed = pipe.upscale("a lake", low_res, color_fix=True, **options)
    assert fixed.parameters[0].fields()["Color fix"] == "on" and any("colour fix" in note for note in fixed.notes)
    assert pixels(fixed.images[0]).tolist() == pixels(color_fixed(plain.images[0], low_res, sigma=4)).tolist()
    upscaler.upscaler.color_fix = True
    try:
        assert pixels(pipe.upscale("a lake", low_res, **options).images[0]).tolist() == pixels(fixed.images[0]).tolist()
    finally:
        upscaler.upscaler.color_fix = False


def test_the_flag_reads_on_and_off():
    assert parse_on_off("on") is True and parse_on_off("off") is False
    with pytest.raises(ValueError, match="must be on or off"):
        parse_on_off("yes")
