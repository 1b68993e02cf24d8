"""Image to image: a mode of the one sampling loop, checked against diffusers' own pipeline."""

import numpy as np
import pytest
import torch
from PIL import Image
from reference import LastLatents, diffusers_pipeline

from ldm.diffusion.samplers import DDPM_SAMPLER_NAMES, make_sampler
from ldm.images import from_pil, to_pil, work_size
from ldm.settings import GenerationError
from ldm.pipeline import Pipeline, make_generators
from ldm.png_info import parse_parameters

STEPS = 4


@pytest.mark.parametrize("sampler", DDPM_SAMPLER_NAMES)
def test_matches_diffusers_img2img(tiny_components, photo, sampler):
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = Pipeline(tiny_components)
    reference = diffusers_pipeline(StableDiffusionImg2ImgPipeline, tiny_components, sampler)
    expected = reference(
        prompt_embeds=pipe.encode_text(["a cat"] * 2).tokens,
        negative_prompt_embeds=pipe.encode_text([""] * 2).tokens,
        image=photo,
        strength=0.5,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=make_generators([3, 4]),
        output_type="latent",
    ).images
    last = LastLatents()
    pipe.img2img("a cat", photo, 0.5, n=2, steps=STEPS, sampler=sampler, seed=3, callback=last, progress=False)
    # Not bit-equal: diffusers runs its U-Net on channels-last latents here (rounding ~1e-5).
    assert torch.allclose(last.latents, expected, rtol=0, atol=1e-4), (last.latents - expected).abs().max()


@pytest.mark.parametrize(("sampler", "steps", "strength", "kept"), [
    ("ddim", 10, 0.5, 5),
    ("dpm++2m", 10, 0.34, 3),  # int(3.4)
    ("heun", 10, 0.5, 9),  # 2 * steps - 1 timesteps (two evaluations a step but the first), cut at 2 * 5
    ("euler", 4, 1.0, 4),
    ("unipc", 4, 0.1, 0),
])  # fmt: skip
def test_strength_keeps_the_last_steps_of_the_schedule(tiny_components, sampler, steps, strength, kept):
    full = make_sampler(sampler, tiny_components.scheduler_config).set_timesteps(steps)
    cut = make_sampler(sampler, tiny_components.scheduler_config).set_timesteps(steps, strength=strength)
    assert len(cut) == kept
    assert torch.equal(cut, full[len(full) - kept :])


def test_img2img_runs_only_the_kept_steps(tiny_components, photo):
    last = LastLatents()
    Pipeline(tiny_components).img2img("x", photo, 0.3, steps=10, cfg=1, sampler="ddim", seed=0, callback=last, progress=False)
    assert last.steps == 3


def test_strength_zero_returns_the_vae_round_trip(tiny_components, photo):
    pipe = Pipeline(tiny_components)
    result = pipe.img2img("a cat", photo, 0.0, steps=STEPS, seed=5, progress=False)
    round_trip = to_pil(pipe.decode(pipe.encode_images(from_pil([photo]), make_generators([5]))))[0]
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(round_trip))


def test_strength_one_ignores_the_image_and_equals_txt2img(tiny_components, photo):
    pipe = Pipeline(tiny_components)
    other = Image.fromarray(255 - np.asarray(photo))
    options = dict(steps=2, seed=11, sampler="euler-a", progress=False)
    first = pipe.img2img("a cat", photo, 1.0, **options).images[0]
    second = pipe.img2img("a cat", other, 1.0, **options).images[0]
    plain = pipe.generate("a cat", **options).images[0]
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert np.array_equal(np.asarray(first), np.asarray(plain))


def test_the_image_steers_the_result(tiny_components, photo):
    pipe = Pipeline(tiny_components)
    other = Image.fromarray(255 - np.asarray(photo))
    first = pipe.img2img("a cat", photo, 0.5, steps=2, cfg=1, seed=1, progress=False).images[0]
    second = pipe.img2img("a cat", other, 0.5, steps=2, cfg=1, seed=1, progress=False).images[0]
    assert not np.array_equal(np.asarray(first), np.asarray(second))


def test_image_k_of_a_batch_equals_a_lone_run_with_its_seed(tiny_components, photo):
    pipe = Pipeline(tiny_components)
    options = dict(steps=STEPS, cfg=1, sampler="euler-a", progress=False)
    batch = pipe.img2img("a cat", photo, 0.7, n=2, seed=20, **options)
    lone = pipe.img2img("a cat", photo, 0.7, n=1, seed=21, **options)
    assert batch.seeds == [20, 21]
    assert np.abs(np.asarray(batch.images[1], dtype=int) - np.asarray(lone.images[0], dtype=int)).max() <= 1


def test_an_image_of_another_size_is_resized_and_said_so(tiny_components, photo):
    pipe = Pipeline(tiny_components)
    odd = photo.resize((37, 21))
    result = pipe.img2img("a cat", odd, 0.5, steps=2, seed=0, progress=False)
    assert result.images[0].size == (40, 24)  # its own size, rounded to multiples of 8
    assert result.notes == ["init image 37x21 resized to 40x24"]
    result = pipe.img2img("a cat", odd, 0.5, steps=2, seed=0, width=16, height=32, progress=False)
    assert result.images[0].size == (16, 32)
    assert pipe.img2img("a cat", photo, 0.5, steps=2, seed=0, progress=False).notes == []


def test_work_size():
    assert work_size((37, 21)) == (40, 24)
    assert work_size((37, 21), 64, 32) == (64, 32)
    assert work_size((100, 50), width=64) == (64, 32)  # the other side keeps the aspect ratio
    assert work_size((3, 2)) == (8, 8)
    assert work_size((36, 20)) == (40, 24)  # halves round up


def test_parameters_record_the_denoising_strength(tiny_components, photo):
    result = Pipeline(tiny_components).img2img("a cat", photo, 0.35, steps=3, seed=2, progress=False)
    fields = parse_parameters(result.parameters[0].to_text())
    assert fields["Denoising strength"] == "0.35"
    assert fields["Seed"] == "2" and fields["Size"] == "32x32"


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_outside_zero_to_one_is_refused(tiny_components, photo, strength):
    with pytest.raises(GenerationError, match="strength must be between 0 and 1"):
        Pipeline(tiny_components).img2img("a cat", photo, strength, steps=2, progress=False)


def test_an_inpainting_model_refuses_plain_generation(tiny_inpainting_components, photo):
    pipe = Pipeline(tiny_inpainting_components)
    with pytest.raises(GenerationError, match="inpainting model"):
        pipe.img2img("a cat", photo, 0.5, steps=2, progress=False)
