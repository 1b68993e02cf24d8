"""The noise schedule as a diffusers scheduler config, shared by training and sampling."""

from __future__ import annotations

from ldm.config import SchedulerConfig

# Our names -> diffusers' names for the beta schedules.
_BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


def scheduler_config(config: SchedulerConfig) -> dict:
    """A diffusers scheduler config dict; every sampler is built from this one dict."""
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "beta_schedule": _BETA_SCHEDULES[config.beta_schedule],
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "prediction_type": config.prediction_type,
        "timestep_spacing": config.timestep_spacing,
        "steps_offset": config.steps_offset,
        "rescale_betas_zero_snr": config.rescale_betas_zero_snr,
        # Latents are not bounded like pixels, so never clip the predicted x0.
        "clip_sample": False,
        "set_alpha_to_one": False,
    }
