"""The noise schedule as a diffusers scheduler config, shared by training and sampling."""

from __future__ import annotations

import dataclasses

from ldm.config import SchedulerConfig

# Our names -> diffusers' names for the beta schedules.
_BETA_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}


FLOW_PREDICTION = "flow_prediction"  # diffusers' name for a velocity (e - x0) target


def is_flow(scheduler_config: dict) -> bool:
    """Whether a model's scheduler config (Components.scheduler_config) is a flow model's."""
    return scheduler_config.get("prediction_type") == FLOW_PREDICTION


# What a flow model's scheduler config holds besides diffusers' FlowMatchEulerDiscreteScheduler's
# keys: the training density and weighting (ldm.diffusion.process.RectifiedFlow reads them).
_FLOW_TRAINING_KEYS = ("timestep_sampling", "logit_mean", "logit_std", "mode_scale", "loss_weighting")


def scheduler_config(config: SchedulerConfig) -> dict:
    """A diffusers scheduler config dict; every sampler is built from this one dict."""
    if config.prediction_type == "flow":
        return flow_scheduler_config(config)
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


def flow_scheduler_config(config: SchedulerConfig) -> dict:
    """A FlowMatchEulerDiscreteScheduler config, marked as a flow model's by diffusers' own
    `flow_prediction` (which its DPM-Solver and UniPC read in their flow form)."""
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "shift": config.shift,
        "prediction_type": FLOW_PREDICTION,
        **{key: getattr(config, key) for key in _FLOW_TRAINING_KEYS},
    }


# What diffusers' DDPMScheduler assumes for a key its config leaves out.
_DIFFUSERS_DEFAULTS = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02}


def scheduler_config_from_diffusers(data: dict) -> SchedulerConfig:
    """Our SchedulerConfig for a diffusers scheduler config (an imported folder's); ValueError
    for a schedule it cannot express (explicit trained betas, an unknown beta schedule)."""
    if data.get("trained_betas") is not None:
        raise ValueError("a scheduler with explicit trained_betas is not supported")
    data = {**_DIFFUSERS_DEFAULTS, **data}
    ours = {theirs: name for name, theirs in _BETA_SCHEDULES.items()}
    if data["beta_schedule"] not in ours:
        raise ValueError(f"unknown beta_schedule {data['beta_schedule']!r}; expected one of {', '.join(ours)}")
    known = {field.name for field in dataclasses.fields(SchedulerConfig)}
    values = {name: value for name, value in data.items() if name in known}
    return SchedulerConfig(**{**values, "beta_schedule": ours[data["beta_schedule"]]})
