"""The noise process (ldm.diffusion.process) against diffusers' DDPM scheduler and the
min-SNR formula, and every sampler's start / model_input / renoise against the process:
whatever space a sampler works in, the denoiser must read what training showed it."""

from pathlib import Path

import pytest
import torch

from ldm.config import SchedulerConfig
from ldm.diffusion.process import DiscreteDDPM, noise_process
from ldm.diffusion.samplers import DDPM_SAMPLER_NAMES, make_sampler
from ldm.diffusion.schedule import scheduler_config
from seeded_draws import SeededDraws

SCHEDULES = {
    "eps": SchedulerConfig(),
    "v-linear": SchedulerConfig(beta_schedule="linear", beta_start=0.0001, beta_end=0.02, prediction_type="v_prediction"),
    "v-cosine-zero-snr": SchedulerConfig(beta_schedule="cosine", prediction_type="v_prediction", rescale_betas_zero_snr=True),
}
TIMESTEPS = torch.tensor([0, 17, 500, 998, 999])


def draws(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", SCHEDULES)
def test_noised_and_target_are_diffusers_ddpm_exactly(name):
    from diffusers import DDPMScheduler

    config = scheduler_config(SCHEDULES[name])
    process, ddpm = noise_process(config), DDPMScheduler.from_config(config)
    x0, noise = draws(5, 4, 8, 8), draws(5, 4, 8, 8, seed=1)
    assert torch.equal(process.noised(x0, noise, TIMESTEPS), ddpm.add_noise(x0, noise, TIMESTEPS))
    expected = ddpm.get_velocity(x0, noise, TIMESTEPS) if name.startswith("v") else noise
    assert torch.equal(process.target(x0, noise, TIMESTEPS), expected)


def test_the_v_target_and_the_noised_latents_give_back_x0_and_the_noise():
    """v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho): x0 = sqrt(a) x_t - sqrt(1 - a) v."""
    process = noise_process(scheduler_config(SCHEDULES["v-linear"]))
    x0, noise, t = draws(5, 4, 8, 8), draws(5, 4, 8, 8, seed=1), TIMESTEPS
    noisy, v = process.noised(x0, noise, t), process.target(x0, noise, t)
    a = process.alpha_bars[t].view(-1, 1, 1, 1)
    assert torch.allclose(a.sqrt() * noisy - (1 - a).sqrt() * v, x0, atol=1e-5)
    assert torch.allclose((1 - a).sqrt() * noisy + a.sqrt() * v, noise, atol=1e-5)


@pytest.mark.parametrize("name", SCHEDULES)
def test_min_snr_weights_are_the_formula(name):
    gamma = 5.0
    process = noise_process(scheduler_config(SCHEDULES[name]))
    a = process.alpha_bars[TIMESTEPS].double()
    snr = a / (1 - a)
    clipped = snr.clamp(max=gamma)
    expected = clipped / (snr + 1) if process.prediction_type == "v_prediction" else clipped / snr
    weights = process.loss_weights(TIMESTEPS, gamma)
    finite = torch.isfinite(expected)
    assert torch.allclose(weights.double()[finite], expected[finite], rtol=1e-4)
    assert torch.isfinite(weights).all()  # zero terminal SNR: eps clamps, v gives 0
    assert torch.equal(process.loss_weights(TIMESTEPS, None), torch.ones(len(TIMESTEPS)))


def test_timesteps_are_drawn_over_the_whole_schedule_and_placed_by_noise_level():
    process = noise_process(scheduler_config(SchedulerConfig(num_train_timesteps=100)))
    drawn = process.sample_timesteps(5000, SeededDraws())
    assert drawn.dtype == torch.long and drawn.min() == 0 and drawn.max() == 99
    assert process.timesteps_at(torch.tensor([0.0, 0.5, 0.999, 1.0])).tolist() == [0, 50, 99, 99]
    assert torch.equal(process.model_time(drawn), drawn)


@pytest.mark.parametrize("sampler", DDPM_SAMPLER_NAMES)
def test_every_sampler_feeds_the_denoiser_what_the_process_trained_it_on(sampler):
    """renoise then model_input at the strength's first timestep is the process's noised
    latents, and model_input of start(noise) at the first step is the noise itself, in DDPM
    space (DDIM, DPM-Solver, ...) and sigma space (Euler, Heun) alike."""
    config = scheduler_config(SchedulerConfig())
    process: DiscreteDDPM = noise_process(config)
    x0, noise = draws(2, 4, 8, 8), draws(2, 4, 8, 8, seed=1)

    chosen = make_sampler(sampler, config)
    timesteps = chosen.set_timesteps(10, strength=0.6)
    noisy = chosen.model_input(chosen.renoise(x0, noise, timesteps[:1].repeat(2)), timesteps[0])
    expected = process.noised(x0, noise, timesteps[:1].long().repeat(2))
    # Karras sigmas fall between the integer timesteps that the denoiser is told: close, not equal.
    assert torch.allclose(noisy, expected, rtol=1e-4, atol=2e-3 if sampler.endswith("karras") else 1e-5)

    chosen = make_sampler(sampler, config)
    timesteps = chosen.set_timesteps(10)
    assert torch.allclose(chosen.model_input(chosen.start(noise), timesteps[0]), noise, atol=1e-5)


def test_only_the_process_and_the_samplers_touch_scheduler_internals():
    root = Path(__file__).parent.parent / "ldm"
    internals = ("add_noise", "get_velocity", "init_noise_sigma", "scale_model_input", "alphas_cumprod")
    allowed = {root / "diffusion" / "process.py", root / "diffusion" / "samplers.py"}
    offenders = [
        f"{path.relative_to(root.parent)}: {name}"
        for path in sorted(root.rglob("*.py"))
        if path not in allowed
        for name in internals
        if name in path.read_text()
    ]
    assert offenders == []
