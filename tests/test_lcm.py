"""`--sampler lcm` on a guidance-distilled U-Net against diffusers' LatentConsistencyModelPipeline,
and a model's own sampling defaults."""

import pytest
import torch
from diffusers import LatentConsistencyModelPipeline
from tiny import build_tiny

from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.guidance import GuidedModel, guidance_scale_embedding
from ldm.pipeline import Pipeline, SampleRequest, make_generators
from reference import diffusers_pipeline

EMBEDDING = 32  # the tiny U-Net's guidance-embedding width (time_cond_proj_dim)


@pytest.fixture(scope="module")
def lcm_components():
    return build_tiny(unet__time_cond_proj_dim=EMBEDDING)


def lcm_sample(pipe, steps, cfg, context, noise, seeds):
    return pipe.sample(SampleRequest(context, None, noise, steps, cfg, "lcm", make_generators(seeds), progress=False))


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("cfg", [1.0, 1.5, 8.0])
def test_lcm_matches_diffusers(lcm_components, steps, cfg):
    pipe = Pipeline(lcm_components)
    context = pipe.encode_text(["a lake at dawn", "a red boat"])
    noise = torch.randn(pipe.latent_shape(2, 32, 32), generator=torch.Generator().manual_seed(1))

    ours = lcm_sample(pipe, steps, cfg, context, noise, [10, 11])

    reference = diffusers_pipeline(LatentConsistencyModelPipeline, lcm_components, "lcm")
    theirs = reference(
        prompt_embeds=context.tokens,
        latents=noise.clone(),
        num_inference_steps=steps,
        guidance_scale=cfg,
        generator=make_generators([10, 11]),
        height=32,
        width=32,
        output_type="latent",
    ).images
    assert ours.shape == theirs.shape == (2, 4, 16, 16)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_the_guidance_scale_reaches_the_embedding(lcm_components):
    """Guards the parity test against a scale that silently does nothing."""
    pipe = Pipeline(lcm_components)
    context = pipe.encode_text(["a lake at dawn"])
    noise = torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(1))
    low, high = (lcm_sample(pipe, 2, cfg, context, noise, [0]) for cfg in (1.5, 8.0))
    assert (low - high).abs().max().item() > 1e-3


def test_one_conditional_denoiser_call_per_step(lcm_components):
    pipe = Pipeline(lcm_components)
    calls = []
    hook = lcm_components.denoiser.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
    try:
        result = pipe.generate("a lake", negative="blurry", sampler="lcm", steps=3, cfg=8.0, seed=0, n=2, progress=False)
    finally:
        hook.remove()
    assert result.notes == ["the negative prompt is not used: this model is guidance-distilled (--cfg is its input)"]
    assert len(calls) == 3
    assert all(len(call["encoder_hidden_states"]) == 2 for call in calls)  # no unconditional half
    assert all(call["timestep_cond"].shape == (2, EMBEDDING) for call in calls)


def test_a_classic_unet_keeps_its_two_pass_guidance():
    components = build_tiny()
    context, uncond = Conditioning(torch.zeros(1, 77, 32)), Conditioning(torch.ones(1, 77, 32))
    model = GuidedModel(components.denoiser, context, uncond, 7.5)
    assert model.guided and "guidance_embedding" not in model.cond.vectors


@pytest.mark.parametrize("width", [EMBEDDING, 33])
def test_guidance_embedding_is_diffusers_formula(width):
    scales = torch.tensor([0.0, 0.5, 6.5])
    theirs = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, scales, embedding_dim=width)
    assert torch.equal(guidance_scale_embedding(scales, width), theirs)


# ----------------------------------------------------------------------------- model defaults


@pytest.fixture(scope="module")
def lcm_with_defaults():
    sampling = {"sampler": "lcm", "steps": 3, "cfg": 2.0}
    return build_tiny(unet__time_cond_proj_dim=EMBEDDING, sampling=sampling)


def used(result):
    settings = result.parameters[0].settings
    return settings.sampler, settings.steps, settings.cfg


def test_the_models_defaults_apply_where_the_request_gives_none(lcm_with_defaults):
    pipe = Pipeline(lcm_with_defaults)
    result = pipe.generate("a lake", seed=0, progress=False)
    assert used(result) == ("lcm", 3, 2.0)
    assert "Steps: 3, Sampler: lcm, CFG scale: 2" in result.parameters[0].to_text()
    explicit = pipe.generate("a lake", seed=0, sampler="lcm", steps=3, cfg=2.0, progress=False)
    assert explicit.images[0].tobytes() == result.images[0].tobytes()


def test_a_given_setting_wins_over_the_models(lcm_with_defaults):
    pipe = Pipeline(lcm_with_defaults)
    result = pipe.generate("a lake", seed=0, steps=2, sampler="ddim", progress=False)
    assert used(result) == ("ddim", 2, 2.0)


def test_without_model_defaults_the_generation_defaults_apply():
    result = Pipeline(build_tiny()).generate("a lake", seed=0, steps=1, progress=False)
    assert used(result) == ("dpm++2m", 1, 7.5)


def test_callbacks_see_lcms_clean_latents_estimate(lcm_components):
    """LCM names its x0 estimate `denoised`; callbacks (previews) get it as predicted_x0."""
    pipe = Pipeline(lcm_components)
    seen = []
    result = pipe.generate("a lake", sampler="lcm", steps=2, seed=0, callback=seen.append, progress=False)
    assert len(seen) == 2 and all(info.predicted_x0 is not None for info in seen)
    assert torch.equal(seen[-1].predicted_x0, seen[-1].latents)  # LCM's last step is its estimate
    assert (seen[0].predicted_x0 - seen[0].latents).abs().max() > 1e-3  # before: re-noised
    assert result.images
