"""Our sampling loop with a DiT against diffusers' PixArtAlphaPipeline on the same tiny parts."""

import pytest
import torch
from reference import pixart_pipeline
from tiny import build_tiny

from ldm.diffusion.guidance import GuidedModel
from ldm.diffusion.samplers import make_sampler
from ldm.diffusion.sampling import denoise
from ldm.pipeline import Pipeline, SampleRequest, make_generators

STEPS = 6


def their_latents(components, sampler, context, uncond, mask, uncond_mask, noise, cfg, seeds):
    return pixart_pipeline(components, sampler)(
        prompt_embeds=context,
        prompt_attention_mask=mask,
        negative_prompt_embeds=uncond,
        negative_prompt_attention_mask=uncond_mask,
        negative_prompt=None,
        latents=noise.clone(),
        num_inference_steps=STEPS,
        guidance_scale=cfg,
        generator=make_generators(seeds),
        height=32,
        width=32,
        use_resolution_binning=False,
        output_type="latent",
    ).images


@pytest.mark.parametrize("learned_sigma", [False, True])
@pytest.mark.parametrize("sampler", ["ddim", "euler-a", "dpm++2m"])
@pytest.mark.parametrize("cfg", [4.5, 1.0])
def test_txt2img_matches_pixart_alpha(sampler, cfg, learned_sigma):
    components = build_tiny(denoiser="dit", dit__learned_sigma=learned_sigma)
    assert components.denoiser.config.out_channels == (8 if learned_sigma else 4)
    pipe = Pipeline(components)
    context = pipe.encode_text(["a lake at dawn", "a red boat"])
    uncond = pipe.encode_text(["", "blurry"])
    noise = torch.randn(pipe.latent_shape(2, 32, 32), generator=torch.Generator().manual_seed(1))
    everything = torch.ones(context.tokens.shape[:2])  # (B, L): our pipeline attends to every token

    ours = pipe.sample(SampleRequest(context, uncond, noise, STEPS, cfg, sampler, make_generators([10, 11]), progress=False))
    theirs = their_latents(components, sampler, context.tokens, uncond.tokens, everything, everything, noise, cfg, [10, 11])

    assert ours.shape == theirs.shape == (2, 4, 16, 16)
    assert (ours - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize("cfg", [4.5, 1.0])
def test_token_masks_reach_the_dit_as_pixart_passes_them(cfg):
    """Masks that hide padding tokens (as PixArt's T5 prompts have) change the result, and
    ours are applied as diffusers applies them."""
    components = build_tiny(denoiser="dit")
    pipe = Pipeline(components)
    context, uncond = pipe.encode_text(["a lake at dawn"]), pipe.encode_text(["blurry"])
    mask, uncond_mask = torch.zeros(1, 77), torch.zeros(1, 77)
    mask[:, :6], uncond_mask[:, :3] = 1, 1
    noise = torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(2))
    sampler = make_sampler("ddim", components.scheduler_config)
    timesteps = sampler.set_timesteps(STEPS)
    model = GuidedModel(components.denoiser, context.replace(mask=mask), uncond.replace(mask=uncond_mask), cfg)
    with torch.no_grad():
        ours = denoise(model, sampler, noise * sampler.scheduler.init_noise_sigma, timesteps, progress=False)
        unmasked = pipe.sample(SampleRequest(context, uncond, noise, STEPS, cfg, "ddim", progress=False))
    theirs = their_latents(components, "ddim", context.tokens, uncond.tokens, mask, uncond_mask, noise, cfg, [0])
    assert (ours - theirs).abs().max().item() < 1e-4
    assert (ours - unmasked).abs().max().item() > 1e-3
