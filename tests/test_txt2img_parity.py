"""Our txt2img loop against diffusers' StableDiffusionPipeline on the same tiny parts."""

import pytest
import torch
from diffusers import StableDiffusionPipeline

from ldm.pipeline import Pipeline, SampleRequest, make_generators
from reference import diffusers_pipeline

STEPS = 6
CFG = 5.0


@pytest.mark.parametrize("sampler", ["ddim", "euler-a", "dpm++2m", "heun", "dpm++2m-karras"])
@pytest.mark.parametrize("cfg", [CFG, 1.0])
def test_txt2img_matches_diffusers(tiny_components, sampler, cfg):
    pipe = Pipeline(tiny_components)
    context = pipe.encode_text(["a lake at dawn", "a red boat"])
    uncond = pipe.encode_text(["", "blurry"])
    noise = torch.randn(pipe.latent_shape(2, 32, 32), generator=torch.Generator().manual_seed(1))

    ours = pipe.sample(SampleRequest(context, uncond, noise, STEPS, cfg, sampler, make_generators([10, 11]), progress=False))

    reference = diffusers_pipeline(StableDiffusionPipeline, tiny_components, sampler)
    theirs = reference(
        prompt_embeds=context.tokens,
        negative_prompt_embeds=uncond.tokens,
        latents=noise.clone(),
        num_inference_steps=STEPS,
        guidance_scale=cfg,
        generator=make_generators([10, 11]),
        height=32,
        width=32,
        output_type="latent",
    ).images
    assert ours.shape == theirs.shape == (2, 4, 16, 16)
    assert (ours - theirs).abs().max().item() < 1e-4

    # And in pixels, through the same VAE decode.
    pixels = pipe.decode(ours)
    their_pixels = reference.vae.decode(theirs / reference.vae.config.scaling_factor).sample
    assert (pixels - their_pixels).abs().max().item() < 1e-4


def test_guidance_changes_the_result(tiny_components):
    """Guards the parity test against a guidance that silently does nothing."""
    pipe = Pipeline(tiny_components)
    context = pipe.encode_text(["a lake at dawn"])
    uncond = pipe.encode_text([""])
    noise = torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(1))
    guided = pipe.sample(SampleRequest(context, uncond, noise, 4, 7.5, "ddim", progress=False))
    plain = pipe.sample(SampleRequest(context, uncond, noise, 4, 1.0, "ddim", progress=False))
    assert (guided - plain).abs().max().item() > 1e-3
