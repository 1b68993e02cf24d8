"""Flow matching (ldm.diffusion.process.RectifiedFlow and the flow samplers): the training
target and timestep density against SD3's formulas (diffusers' training_utils), sampling a
tiny flow model against a hand-written Euler loop over diffusers' sigmas, img2img's start,
and the samplers a flow model refuses (and that an eps model refuses)."""

import math

import pytest
import torch
from seeded_draws import SeededDraws
from tiny import build_tiny

from ldm.config import SchedulerConfig
from ldm.diffusion.denoiser import denoise_call
from ldm.diffusion.inpainting import KnownRegion
from ldm.diffusion.process import RectifiedFlow, noise_process
from ldm.diffusion.samplers import FLOW_SAMPLER_NAMES, UnsuitableSampler, make_sampler
from ldm.diffusion.schedule import scheduler_config
from ldm.pipeline import Pipeline, SampleRequest
from ldm.settings import GenerationError

LEVELS = torch.tensor([0.0, 0.1, 0.5, 0.93, 1.0])


def draws(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def flow_config(**keys) -> dict:
    return scheduler_config(SchedulerConfig(prediction_type="flow", **keys))


@pytest.fixture(scope="module")
def flow_components():
    return build_tiny(scheduler={"prediction_type": "flow", "shift": 3.0})


def test_the_eps_and_v_configs_are_unchanged():
    """Golden pixels depend on the DDPM dict: the flow keys must not reach it."""
    config = scheduler_config(SchedulerConfig())
    assert set(config) == {"num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "prediction_type",
                           "timestep_spacing", "steps_offset", "rescale_betas_zero_snr", "clip_sample", "set_alpha_to_one"}  # fmt: skip


def test_noised_and_target_are_the_straight_line_and_diffusers_scale_noise():
    from diffusers import FlowMatchEulerDiscreteScheduler

    process = noise_process(flow_config())
    assert isinstance(process, RectifiedFlow)
    x0, noise = draws(5, 4, 8, 8), draws(5, 4, 8, 8, seed=1)
    s = LEVELS.view(-1, 1, 1, 1)
    assert torch.allclose(process.noised(x0, noise, LEVELS), (1 - s) * x0 + s * noise)
    assert torch.equal(process.target(x0, noise, LEVELS), noise - x0)
    assert torch.allclose(process.model_time(LEVELS), LEVELS * 1000)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    for t, sigma in zip(scheduler.timesteps[:4], scheduler.sigmas[:4]):
        ours = process.noised(x0[:1], noise[:1], sigma.view(1))
        assert torch.allclose(ours, scheduler.scale_noise(x0[:1], t.view(1), noise[:1]), atol=1e-6)


def test_logit_normal_levels_have_the_asked_mean_and_std():
    process = noise_process(flow_config(timestep_sampling="logit_normal", logit_mean=0.5, logit_std=0.8))
    levels = process.sample_timesteps(200_000, SeededDraws(0))
    logits = torch.logit(levels.double())
    assert abs(logits.mean().item() - 0.5) < 0.01 and abs(logits.std().item() - 0.8) < 0.01


def test_the_density_is_diffusers_compute_density_for_timestep_sampling():
    from diffusers.training_utils import compute_density_for_timestep_sampling

    for scheme in ("uniform", "logit_normal", "mode"):
        process = noise_process(flow_config(timestep_sampling=scheme, logit_mean=0.2, logit_std=1.3, mode_scale=1.29))
        ours = process.sample_timesteps(64, SeededDraws(3))
        theirs = compute_density_for_timestep_sampling(scheme, 64, logit_mean=0.2, logit_std=1.3, mode_scale=1.29,
                                                       generator=torch.Generator().manual_seed(3))  # fmt: skip
        assert torch.allclose(ours, theirs, atol=1e-6), scheme


def test_the_shift_moves_levels_towards_noise():
    shift = 3.0
    process = noise_process(flow_config(shift=shift))
    u = SeededDraws(0).rand((1000,))
    shifted = process.sample_timesteps(1000, SeededDraws(0))
    assert torch.allclose(shifted, shift * u / (1 + (shift - 1) * u))
    assert shifted.mean() > u.mean()
    assert torch.allclose(process.timesteps_at(torch.tensor([0.0, 1.0])), torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("weighting", ["none", "sigma_sqrt", "cosmap"])
def test_loss_weights_are_diffusers_compute_loss_weighting_for_sd3(weighting):
    from diffusers.training_utils import compute_loss_weighting_for_sd3

    process = noise_process(flow_config(loss_weighting=weighting))
    sigmas = torch.tensor([0.05, 0.3, 0.5, 0.9, 1.0])
    assert torch.allclose(process.loss_weights(sigmas, None), compute_loss_weighting_for_sd3(weighting, sigmas))


def test_flow_euler_is_a_hand_written_euler_loop_over_diffusers_sigmas(flow_components):
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = Pipeline(flow_components)
    cond = pipe.encode_text(["a meadow"])
    noise = draws(1, 4, 8, 8, seed=5)
    ours = pipe.sample(SampleRequest(cond, None, noise, 6, 1.0, "flow-euler", progress=False))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(6)
    x = noise.clone()
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            velocity = denoise_call(flow_components.denoiser, x, t.view(1), cond)
            x = x + (scheduler.sigmas[i + 1] - scheduler.sigmas[i]) * velocity
    assert torch.allclose(ours, x, atol=1e-5)


@pytest.mark.parametrize("sampler", FLOW_SAMPLER_NAMES)
def test_every_flow_sampler_draws_img2img_and_inpaints(flow_components, sampler):
    pipe = Pipeline(flow_components)
    cond = pipe.encode_text(["a lake"])
    init, noise = draws(1, 4, 8, 8, seed=2), draws(1, 4, 8, 8)
    txt2img = pipe.sample(SampleRequest(cond, None, noise, 4, 1.0, sampler, progress=False))
    img2img = pipe.sample(SampleRequest(cond, None, noise, 4, 1.0, sampler, progress=False, init_latents=init, strength=0.6))
    assert torch.isfinite(txt2img).all() and torch.isfinite(img2img).all()
    known = KnownRegion(init, torch.zeros(1, 1, 8, 8).index_fill_(3, torch.arange(4), 1.0))
    inpainted = pipe.sample(SampleRequest(cond, None, noise, 4, 1.0, sampler, progress=False, known_region=known))
    assert torch.allclose(inpainted[..., 4:], init[..., 4:])  # mask 0: the known region, kept


@pytest.mark.parametrize("sampler", FLOW_SAMPLER_NAMES)
def test_img2img_starts_from_the_noised_latents_of_its_first_timestep(sampler):
    chosen = make_sampler(sampler, flow_config(shift=3.0))
    timesteps = chosen.set_timesteps(10, strength=0.5)
    x0, noise = draws(2, 4, 8, 8), draws(2, 4, 8, 8, seed=1)
    scheduler = chosen.scheduler
    sigma = scheduler.sigmas[5 * scheduler.order]  # the 5 steps cut, as diffusers cuts them
    expected = (1 - sigma) * x0 + sigma * noise
    assert torch.allclose(chosen.renoise(x0, noise, timesteps[:1].repeat(2)), expected, atol=1e-6)
    assert torch.equal(chosen.start(noise), noise)


def test_a_ddpm_sampler_on_a_flow_model_and_a_flow_sampler_on_an_eps_model_are_refused(flow_components, tiny_components):
    with pytest.raises(UnsuitableSampler, match="its samplers: flow-euler, flow-heun"):
        make_sampler("dpm++2m", flow_config())
    with pytest.raises(GenerationError, match=r"^sampler 'euler' does not apply to a flow-matching model; its samplers: flow-euler"):
        Pipeline(flow_components).generate("a lake", steps=2, sampler="euler", progress=False)
    with pytest.raises(GenerationError, match=r"^sampler 'flow-euler' does not apply to an eps/v model; its samplers: ddpm"):
        Pipeline(tiny_components).generate("a lake", steps=2, sampler="flow-euler", progress=False)


def test_a_flow_model_samples_with_flow_euler_by_default(flow_components):
    assert Pipeline(flow_components).request("a lake", {}).sampler == "flow-euler"


def test_sigma_sqrt_is_finite_at_level_zero():
    process = noise_process(flow_config(loss_weighting="sigma_sqrt"))
    assert math.isfinite(process.loss_weights(torch.tensor([0.0]), None).item())
