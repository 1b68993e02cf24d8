"""Prompt editing with a ControlNet: the ControlNet sees the conditioning of the step too."""

import torch

from ldm.control.denoiser import ActiveControl, control_tensor, with_controls
from ldm.diffusion.guidance import GuidedModel
from ldm.diffusion.samplers import make_sampler
from ldm.diffusion.sampling import denoise
from ldm.pipeline import Pipeline, SampleRequest


def test_prompt_editing_with_a_controlnet_equals_switching_by_hand(tiny_components, controlnet, edges):
    pipe = Pipeline(tiny_components)
    noise = torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(2))
    uncond = pipe.encode_text([""])
    cond = pipe.encode_prompt("a [lake:desert:2]", 1, 4)
    control = ActiveControl(controlnet, control_tensor(edges, (32, 32)), 0.8)
    sampled = pipe.sample(SampleRequest(cond, uncond, noise, 4, 5.0, "ddim", progress=False, controls=(control,)))

    (_, lake), (_, desert) = cond.entries
    controlled = with_controls(tiny_components.denoiser, [control], 4)  # counts its calls: steering.step
    sampler = make_sampler("ddim", tiny_components.scheduler_config)
    timesteps = sampler.set_timesteps(4)

    def by_step(x, t):
        return GuidedModel(controlled, lake if controlled.steering.step <= 2 else desert, uncond, 5.0)(x, t)

    with torch.no_grad():
        expected = denoise(by_step, sampler, sampler.start(noise), timesteps, progress=False)
    torch.testing.assert_close(sampled, expected)
