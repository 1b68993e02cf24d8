"""An SD3 model (read from a diffusers folder or a single file) as a StableDiffusion3Pipeline
folder, which diffusers and ldm read."""

from __future__ import annotations

from pathlib import Path

from ldm.formats.diffusers_export import is_diffusers_folder
from ldm.formats.model_folder import staged_folder
from ldm.models.components import Components


def save_sd3_folder(components: Components, path: Path) -> Path:
    """StableDiffusion3Pipeline's folder: the text models and tokenizers as they are (T5's
    where the model has one), the model's schedule as FlowMatchEulerDiscreteScheduler's."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    encoders = components.text_encoders
    t5 = encoders[2] if len(encoders) > 2 else None
    schedule = {k: v for k, v in components.scheduler_config.items() if k in FlowMatchEulerDiscreteScheduler().config}
    pipe = StableDiffusion3Pipeline(
        transformer=components.denoiser,
        vae=components.vae,
        text_encoder=encoders[0].model,
        text_encoder_2=encoders[1].model,
        tokenizer=encoders[0].tokenizer,
        tokenizer_2=encoders[1].tokenizer,
        text_encoder_3=t5.model if t5 else None,
        tokenizer_3=t5.tokenizer if t5 else None,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(schedule),
    )
    with staged_folder(path, is_diffusers_folder, "diffusers model folder") as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
    return path
