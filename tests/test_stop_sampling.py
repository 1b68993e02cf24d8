"""Sampling stopped early (an interrupt) returns the clean-latents estimate of the step it
stopped at, which every sampler provides."""

import pytest
import torch

from ldm.diffusion.samplers import DDPM_SAMPLER_NAMES
from ldm.diffusion.sampling import StopSampling
from ldm.pipeline import Pipeline, SampleRequest


@pytest.mark.parametrize("sampler", DDPM_SAMPLER_NAMES)
def test_every_sampler_gives_its_clean_latents_estimate_at_every_step(tiny_unet_components, sampler):
    seen = []
    Pipeline(tiny_unet_components).generate("a lake", steps=4, seed=0, sampler=sampler, callback=seen.append, progress=False)
    assert all(info.predicted_x0 is not None for info in seen)
    if sampler != "ddim":  # DDIM's last step ends at alphas_cumprod[0] < 1, not at its estimate
        # The last step lands on its estimate: it is the clean latents, not the noise.
        torch.testing.assert_close(seen[-1].predicted_x0, seen[-1].latents)
    assert (seen[0].predicted_x0 - seen[0].latents).abs().max() > 1e-2  # before: still noisy


@pytest.mark.parametrize("sampler", ["dpm++2m", "euler-a"])
def test_stop_sampling_returns_the_estimate_of_the_step_it_stopped_at(tiny_unet_components, sampler):
    pipeline, seen = Pipeline(tiny_unet_components), []

    def stop_after_second_step(info):
        seen.append(info)
        if info.step == 1:
            raise StopSampling()

    context = pipeline.encode_text(["a lake"])
    noise = torch.randn(pipeline.latent_shape(1, 128, 128), generator=torch.Generator().manual_seed(0))
    latents = pipeline.sample(SampleRequest(context, None, noise, 6, 1.0, sampler, callback=stop_after_second_step, progress=False))
    assert [info.step for info in seen] == [0, 1]
    assert torch.equal(latents, seen[-1].predicted_x0)
