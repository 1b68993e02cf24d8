"""What makes a diffusers folder a super-resolution model: StableDiffusionUpscalePipeline's
model_index.json (its max_noise_level) and low_res_scheduler/ (the noise added to the
low-resolution picture), read into the same UpscalerConfig our own upscalers carry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ldm.config import UpscalerConfig
from ldm.diffusion.schedule import scheduler_config_from_diffusers
from ldm.models.weights import ModelError

UPSCALE_PIPELINE = "StableDiffusionUpscalePipeline"
DEFAULT_MAX_NOISE_LEVEL = 350  # StableDiffusionUpscalePipeline's when model_index.json does not say


def read_json(file: Path) -> dict:
    """A JSON object from `file`; ModelError in one line when it is missing or not JSON."""
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        raise ModelError(f"{file} is missing") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read {file}: {error}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{file} is not a JSON object")
    return data


def diffusers_upscaler(path: Path) -> Optional[UpscalerConfig]:
    """The upscaler description of the diffusers folder `path`, or None when its
    model_index.json names another pipeline."""
    index = read_json(path / "model_index.json")
    if index.get("_class_name") != UPSCALE_PIPELINE:
        return None
    file = path / "low_res_scheduler" / "scheduler_config.json"
    settings = {key: value for key, value in read_json(file).items() if not key.startswith("_")}
    try:
        low_res_scheduler = scheduler_config_from_diffusers(settings)
    except (TypeError, ValueError) as error:
        raise ModelError(f"{file}: {error}") from None
    max_noise_level = index.get("max_noise_level", DEFAULT_MAX_NOISE_LEVEL)
    if not isinstance(max_noise_level, int) or max_noise_level < 0:
        raise ModelError(f"{path / 'model_index.json'}: max_noise_level must be a whole number >= 0, got {max_noise_level!r}")
    default = UpscalerConfig()
    return UpscalerConfig(max_noise_level, min(default.noise_level, max_noise_level), low_res_scheduler)


def check_upscaler_denoiser(path: Path, denoiser, latent_channels: int, upscaler: UpscalerConfig) -> None:
    """An upscaler's denoiser reads the picture's 3 channels beside the latents and one class
    label per noise level; ModelError naming what the folder's denoiser lacks."""
    config = denoiser.config
    if config.in_channels != latent_channels + 3:
        raise ModelError(
            f"{path} is an upscaler folder, but its denoiser reads {config.in_channels} channels, "
            f"not the latents' {latent_channels} + 3 (the picture)"
        )
    classes = getattr(config, "num_class_embeds", None)
    if classes is None or classes <= upscaler.max_noise_level:
        raise ModelError(f"{path} is an upscaler folder, but its denoiser has no class label for every noise level up to {upscaler.max_noise_level}")
