"""The hires fix (AUTOMATIC1111's): its result equals the same steps done by hand (txt2img at the
first size, the same upscale, image-to-image with the same seeds); its arithmetic (target size,
crop, schedule); its settings' checks and PNG parameters."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from reference import LastLatents

from ldm.hires import HIRES_UPSCALERS, hires_schedule, hires_size, short_upscaler_name
from ldm.images import to_pil
from ldm.pipeline import Pipeline, SampleRequest, make_generators
from ldm.pipeline.upscalers import UPSCALERS
from ldm.png_info import parse_parameters
from ldm.settings import GenerationError, Limits, Settings, check_settings

STEPS, HIRES_STEPS, STRENGTH = 4, 3, 0.5  # the hires pass: the last 3 of a 6-step schedule


def by_hand_latents(pipe, prompt, seeds, sampler, upscale):
    """Txt2img at 32x32 (the tiny model's size), `upscale`d to 64x64, then img2img at 64x64
    with fresh generators from the same seeds: the last 3 of 6 steps (hires steps / strength)."""
    n = len(seeds)
    cond, uncond = pipe.encode_text([prompt] * n), pipe.encode_text([""] * n)
    generators = make_generators(seeds)
    first = pipe.sample(SampleRequest(cond, uncond, pipe.noise(generators, 32, 32), STEPS, 7.5, sampler, generators, progress=False))
    generators = make_generators(seeds)
    upscaled = upscale(first, generators)
    noise = pipe.noise(generators, 64, 64)
    request = SampleRequest(
        cond, uncond, noise, int(HIRES_STEPS / STRENGTH), 7.5, sampler, generators, progress=False, init_latents=upscaled, strength=STRENGTH
    )
    return pipe.sample(request)


@pytest.mark.parametrize("sampler", ["dpm++2m", "euler-a", "heun"])
def test_latent_hires_fix_equals_the_same_steps_done_by_hand(tiny_components, sampler):
    pipe = Pipeline(tiny_components)
    last = LastLatents()
    result = pipe.generate(
        "a cat", n=2, seed=3, steps=STEPS, sampler=sampler, hires_scale=2, hires_steps=HIRES_STEPS, hires_strength=STRENGTH,
        callback=last, progress=False,
    )  # fmt: skip
    cells = 64 // pipe.vae_scale
    expected = by_hand_latents(pipe, "a cat", [3, 4], sampler, lambda latents, _: F.interpolate(latents, size=(cells, cells), mode="bilinear"))
    assert torch.allclose(last.latents, expected, rtol=0, atol=1e-5), (last.latents - expected).abs().max()
    for got, want in zip(result.images, to_pil(pipe.decode(expected))):
        assert got.size == (64, 64)
        assert np.abs(np.asarray(got, dtype=int) - np.asarray(want, dtype=int)).max() <= 1


def test_lanczos_hires_fix_equals_generate_resize_and_img2img(tiny_components):
    """A pixel upscaler is A1111's: the picture decoded, resized by Lanczos, then img2img on it."""
    pipe = Pipeline(tiny_components)
    options = {"seed": 5, "steps": STEPS, "sampler": "euler-a", "progress": False}
    hires = pipe.generate("a cat", hires_scale=2, hires_steps=HIRES_STEPS, hires_strength=STRENGTH, hires_upscaler="lanczos", **options)
    first = pipe.generate("a cat", **options).images[0]
    by_hand = pipe.img2img("a cat", first.resize((64, 64), Image.LANCZOS), STRENGTH, **{**options, "steps": int(HIRES_STEPS / STRENGTH)})
    np.testing.assert_array_equal(np.asarray(hires.images[0]), np.asarray(by_hand.images[0]))
    assert {"text", "sampling", "upscale", "decode"} <= set(hires.timings)


def test_a_resize_of_another_aspect_ratio_is_cropped_from_the_middle(tiny_unet_components):
    pipe = Pipeline(tiny_unet_components)
    options = {"seed": 2, "steps": 2, "hires_steps": 2, "hires_strength": STRENGTH, "progress": False}
    last = LastLatents()
    result = pipe.generate("a cat", hires_resize=(64, 40), callback=last, **options)
    assert result.images[0].size == (64, 40) and result.parameters[0].width == 32  # the PNG's Size: the first pass's

    def crop(latents, _):  # the tiny VAE's cells are 2 px: 32 rows upscaled, 12 too many, 6 off the top
        return F.interpolate(latents, size=(32, 32), mode="bilinear")[:, :, 6:26]

    cond, uncond = pipe.encode_text(["a cat"]), pipe.encode_text([""])
    generators = make_generators([2])
    first = pipe.sample(SampleRequest(cond, uncond, pipe.noise(generators, 32, 32), 2, 7.5, "dpm++2m", generators, progress=False))
    generators = make_generators([2])
    request = SampleRequest(cond, uncond, pipe.noise(generators, 64, 40), 4, 7.5, "dpm++2m", generators, progress=False,
                            init_latents=crop(first, None), strength=STRENGTH)  # fmt: skip
    assert torch.allclose(last.latents, pipe.sample(request), rtol=0, atol=1e-5)


def test_progress_counts_both_passes(tiny_unet_components):
    seen = []
    Pipeline(tiny_unet_components).generate(
        "a cat", seed=1, steps=4, hires_scale=2, hires_steps=3, callback=lambda info: seen.append((info.step, info.total)), progress=False
    )
    assert seen == [(0, 7), (1, 7), (2, 7), (3, 7), (4, 7), (5, 7), (6, 7)]


def test_every_upscaler_name_has_an_upscaler():
    assert set(UPSCALERS) == set(HIRES_UPSCALERS)
    assert short_upscaler_name("Latent (bicubic antialiased)") == "latent-bicubic-antialiased"


@pytest.mark.parametrize("steps", [1, 3, 10, 20, 33, 150])
@pytest.mark.parametrize("strength", [0.05, 0.1, 0.3, 0.33, 0.5, 0.7, 0.75, 0.9, 0.95, 0.999])
def test_the_hires_pass_runs_its_steps_exactly_as_a1111(steps, strength):
    schedule, share = hires_schedule(steps, strength)
    assert min(int(schedule * share), schedule) == steps and share < 1
    assert schedule == max(int(steps / strength), steps + 1)  # A1111's int(steps / strength), one more at least


def test_strength_0_runs_no_step_and_1_draws_anew():
    assert hires_schedule(10, 0.0) == (10, 0.0) and hires_schedule(10, 1.0) == (10, 1.0)


@pytest.mark.parametrize(
    "first, scale, resize, upscaled, size",
    [
        ((512, 512), 2.0, None, (1024, 1024), (1024, 1024)),
        ((512, 768), 1.5, None, (768, 1152), (768, 1152)),
        ((512, 512), 1.3, None, (664, 664), (664, 664)),  # int(665.6) // 8 cells
        ((512, 512), 2.0, (1024, 768), (1024, 1024), (1024, 768)),  # a resize wins over the scale; covered, cropped
        ((512, 512), None, (768, 1024), (1024, 1024), (768, 1024)),
        ((512, 256), None, (1024, 0), (1024, 512), (1024, 512)),  # 0: from the aspect ratio
        ((512, 256), None, (0, 1000), (2000, 1000), (2000, 1000)),
    ],
)
def test_target_size_as_a1111_calculates_it(first, scale, resize, upscaled, size):
    found = hires_size(*first, scale, resize)
    assert (found.upscaled, found.size) == (upscaled, size)


def test_the_crop_is_the_overflows_smaller_half():
    assert hires_size(512, 512, None, (1024, 776)).crop(8) == (0, 15)  # 31 rows too many: 15 off the top, 16 off the bottom


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hires_scale": 0.5}, "hires scale must be between 1 and 16, got 0.5"),
        ({"hires_scale": math.nan}, "hires scale must be between 1 and 16, got nan"),
        ({"hires_scale": 2, "hires_strength": 1.5}, "hires strength must be between 0 and 1, got 1.5"),
        ({"hires_scale": 2, "hires_steps": -1}, "hires steps must be between 0 (the first pass's) and 1000, got -1"),
        ({"hires_scale": 2, "hires_upscaler": "ESRGAN"}, "unknown hires upscaler 'ESRGAN'; choose one of latent, latent-antialiased,"),
        ({"hires_resize": (0, 0)}, "hires resize must be a width and a height >= 0, not both 0"),
        ({"hires_steps": 5}, "hires steps needs a hires scale or resize (--hires-scale, --hires-resize)"),
        ({"width": 1024, "height": 1024, "hires_scale": 2}, "hires fix size 2048x2048 is 4.2 megapixels, over the limit of 2.1"),
        ({"width": 64, "height": 64, "hires_resize": (4096, 0)}, "hires fix size 4096x4096 is 16.8 megapixels"),
    ],
)
def test_bad_hires_settings_are_one_line_errors(options, message):
    with pytest.raises(GenerationError) as caught:
        check_settings(Settings(prompt="x", **options), "txt2img")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value), str(caught.value)


def test_the_hires_fix_is_for_text_to_image_only():
    with pytest.raises(GenerationError, match="the hires fix is for text to image only"):
        check_settings(Settings(prompt="x", hires_scale=2), "img2img")


def test_the_model_size_is_checked_when_the_first_size_is_the_models(tiny_unet_components):
    with pytest.raises(GenerationError, match="hires fix size 512x512 is 0.3 megapixels, over the limit of 0.1"):
        Pipeline(tiny_unet_components).generate("x", hires_scale=16, limits=Limits(max_pixels=100_000), progress=False)
    with pytest.raises(GenerationError, match="schedule of 2000 steps, over the limit of 1000"):
        Pipeline(tiny_unet_components).generate("x", hires_scale=2, hires_steps=200, hires_strength=0.1, progress=False)


@pytest.mark.parametrize(
    "options, expected, absent",
    [
        (
            {"hires_scale": 2, "hires_steps": 10, "hires_strength": 0.5},
            "Size: 128x128, Model: m, Denoising strength: 0.5, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent",
            (),
        ),
        ({"hires_scale": 1.5, "hires_upscaler": "lanczos"}, "Denoising strength: 0.7, Hires upscale: 1.5, Hires upscaler: Lanczos", ("Hires steps",)),
        ({"hires_scale": 2, "hires_resize": (256, 0), "hires_steps": 0}, "Hires resize: 256x0, Hires upscaler: Latent", ("Hires upscale:", "Hires steps")),
        ({}, "Size: 128x128, Model: m", ("Hires", "Denoising strength")),
    ],
)
def test_png_parameters_record_the_hires_fix_as_a1111_writes_it(options, expected, absent):
    text = ", ".join(f"{key}: {value}" for key, value in Settings(prompt="x", seed=1, **options).png_fields("txt2img", "m", 128, 128).items())
    assert expected in text and not any(word in text for word in absent), text
    assert parse_parameters("x\nSteps: 20, " + text).get("Hires upscaler", "Latent") in HIRES_UPSCALERS
