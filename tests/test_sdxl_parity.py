"""SDXL diffusers folders: ours against diffusers' StableDiffusionXLPipeline (and its
img2img) on the same tiny random folder."""

import numpy as np
import pytest
from PIL import Image
from reference import LastLatents
from sdxl_folder import write_tiny_sdxl_folder

from ldm.diffusion.samplers import make_sampler
from ldm.models.weights import ModelError
from ldm.pipeline import Pipeline, make_generators

STEPS = 4


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return write_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl"))


def reference(folder, pipeline_class, pipe, sampler, **parts):
    """`pipeline_class` read from `folder` (with `parts` of its own: controlnet=...), sampling with our `sampler`'s scheduler."""
    ref = pipeline_class.from_pretrained(folder, **parts, local_files_only=True, use_safetensors=True)
    ref.scheduler = make_sampler(sampler, pipe.components.scheduler_config).scheduler
    ref.set_progress_bar_config(disable=True)
    return ref


def test_loads_the_two_text_encoders_without_a_word(sdxl_folder, capfd):
    from transformers.utils import logging as transformers_logging

    pipe = Pipeline.load(sdxl_folder)
    # transformers' "Loading weights" bars would break --quiet and one-line errors; its own setting is put back.
    assert capfd.readouterr().err == "" and transformers_logging.is_progress_bar_enabled()
    cond = pipe.encode_text(["a lake"])
    assert cond.tokens.shape == (1, 77, 80) and cond.pooled.shape == (1, 24)
    assert pipe.components.conditioner.zeros_for_empty_negative


@pytest.mark.parametrize(("sampler", "cfg", "negative", "size"), [
    ("euler", 5.0, "", (32, 32)),
    ("ddim", 5.0, "blurry", (48, 32)),
    ("dpm++2m", 1.0, "", (32, 48)),
    ("euler-a", 4.0, "ugly", (32, 32)),
    ("heun", 3.0, "", (48, 32)),
    ("dpm++2m-karras", 5.0, "blurry", (32, 32)),
    ("unipc", 4.0, "", (32, 48)),
    ("ddpm", 3.0, "", (32, 32)),
])  # fmt: skip
def test_txt2img_matches_diffusers(sdxl_folder, sampler, cfg, negative, size):
    from diffusers import StableDiffusionXLPipeline

    pipe = Pipeline.load(sdxl_folder)
    width, height = size
    last = LastLatents()
    options = dict(steps=STEPS, cfg=cfg, sampler=sampler, width=width, height=height, prompt_syntax="plain")
    pipe.generate("a lake at dawn", negative=negative, n=2, seed=10, callback=last, progress=False, **options)
    theirs = reference(sdxl_folder, StableDiffusionXLPipeline, pipe, sampler)(
        prompt=["a lake at dawn"] * 2, negative_prompt=[negative] * 2 if negative else None,
        num_inference_steps=STEPS, guidance_scale=cfg, generator=make_generators([10, 11]),
        width=width, height=height, output_type="latent",
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, 4, height // 2, width // 2)  # a 2-level VAE
    assert (last.latents - theirs).abs().max().item() < 1e-4


def test_img2img_matches_diffusers(sdxl_folder):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    pipe = Pipeline.load(sdxl_folder)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8))
    last = LastLatents()
    pipe.img2img("a cat", photo, 0.5, n=2, steps=STEPS, sampler="ddim", seed=3, cfg=6.0, callback=last, progress=False, prompt_syntax="plain")
    theirs = reference(sdxl_folder, StableDiffusionXLImg2ImgPipeline, pipe, "ddim")(
        prompt=["a cat"] * 2, image=photo, strength=0.5, num_inference_steps=STEPS, guidance_scale=6.0,
        generator=make_generators([3, 4]), output_type="latent",
    ).images  # fmt: skip
    assert (last.latents - theirs).abs().max().item() < 1e-4


def test_decodes_through_the_vae(sdxl_folder):
    result = Pipeline.load(sdxl_folder).generate("a boat", steps=2, width=32, height=32, seed=1, progress=False)
    assert result.images[0].size == (32, 32)


def test_a_refiner_folder_is_refused_in_one_line(sdxl_folder, tmp_path):
    import shutil

    refiner = tmp_path / "refiner"
    shutil.copytree(sdxl_folder, refiner)
    shutil.rmtree(refiner / "text_encoder")
    with pytest.raises(ModelError, match="give it with --refiner"):
        Pipeline.load(refiner)




def test_the_hires_fix_draws_an_sdxl_model_with_each_pass_s_size_ids(sdxl_folder):
    """Each pass tells the U-Net its own size (A1111's defaults: original = target = the drawn size)."""
    pipe = Pipeline.load(sdxl_folder)
    seen = []
    hook = pipe.components.denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["added_cond_kwargs"]["time_ids"][0].tolist())), with_kwargs=True
    )
    try:
        result = pipe.generate("a lake", hires_scale=2, hires_strength=0.5, steps=2, seed=0, cfg=1.0, progress=False)
    finally:
        hook.remove()
    assert result.images[0].size == (2 * pipe.default_size, 2 * pipe.default_size)
    small, large = pipe.default_size, 2 * pipe.default_size
    assert seen[0] == (small, small, 0, 0, small, small) and seen[-1] == (large, large, 0, 0, large, large)
