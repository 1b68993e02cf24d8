"""Our upscale task against diffusers' StableDiffusionUpscalePipeline on the same tiny parts:
the same latents and pixels for several samplers, noise levels, cfg on and off, on a
non-square input (random draws in diffusers' order: the picture's noise, then the latents')."""

import numpy as np
import pytest
from PIL import Image

from ldm.pipeline import Pipeline, make_generators
from reference import LastLatents, upscale_pipeline
from tiny import build_tiny_upscaler

STEPS = 5
CFG = 5.0
SIZE = (40, 24)  # width, height: non-square, multiples of the VAE's 4 (diffusers rounds inputs down to them)


@pytest.fixture(scope="module")
def upscaler():
    return build_tiny_upscaler()


@pytest.fixture(scope="module")
def low_res() -> Image.Image:
    width, height = SIZE
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(3)
    array = np.stack([x * 6, y * 9, (x + y) * 3], axis=-1) + rng.integers(0, 40, (height, width, 3))
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpm++2m", "euler-a"])
@pytest.mark.parametrize("noise_level", [0, 20, 100])
@pytest.mark.parametrize("cfg", [CFG, 1.0])
def test_upscale_matches_diffusers(upscaler, low_res, sampler, noise_level, cfg):
    pipe = Pipeline(upscaler)
    last = LastLatents()
    settings = dict(negative="blurry", steps=STEPS, cfg=cfg, sampler=sampler, seed=7, noise_level=noise_level)
    ours = pipe.upscale("a lake at dawn", low_res, callback=last, progress=False, **settings)
    assert ours.images[0].size == (SIZE[0] * 4, SIZE[1] * 4)
    assert ours.parameters[0].fields()["Noise level"] == str(noise_level)

    reference = upscale_pipeline(upscaler, sampler)
    theirs = reference(
        prompt_embeds=pipe.encode_text(["a lake at dawn"]).tokens,
        negative_prompt_embeds=pipe.encode_text(["blurry"]).tokens,
        image=low_res,
        num_inference_steps=STEPS,
        guidance_scale=cfg,
        noise_level=noise_level,
        generator=make_generators([7]),
        output_type="latent",
    ).images
    assert last.latents.shape == theirs.shape == (1, 4, SIZE[1], SIZE[0])
    assert (last.latents - theirs).abs().max().item() < 1e-4

    pixels = pipe.decode(last.latents)
    their_pixels = reference.vae.decode(theirs / reference.vae.config.scaling_factor).sample
    assert (pixels - their_pixels).abs().max().item() < 1e-4


def test_a_batch_equals_lone_runs(upscaler, low_res):
    """Image k of n has seed + k, the picture's noise included: the same as a lone run."""
    pipe = Pipeline(upscaler)
    both = pipe.upscale("a boat", low_res, steps=3, seed=4, n=2, batch_size=2, progress=False)
    second = pipe.upscale("a boat", low_res, steps=3, seed=5, progress=False)
    assert np.array_equal(np.asarray(both.images[1]), np.asarray(second.images[0]))


def test_the_noise_level_changes_the_result(upscaler, low_res):
    """Guards the parity test against a noise level that silently does nothing."""
    pipe = Pipeline(upscaler)
    low = pipe.upscale("a boat", low_res, steps=3, seed=4, noise_level=0, progress=False).images[0]
    high = pipe.upscale("a boat", low_res, steps=3, seed=4, noise_level=300, progress=False).images[0]
    assert np.abs(np.asarray(low, dtype=int) - np.asarray(high, dtype=int)).max() > 2
