"""An SDXL refiner, as AUTOMATIC1111's "Refiner switch at" and diffusers' denoising_end /
denoising_start hand-off: the base model runs the first `switch` share of the way from noise to
picture, and the refiner (its own text side: OpenCLIP bigG alone) the rest of the same schedule,
with the same sampler, from the base's latents as they are. From an input picture (img2img,
inpaint, the hires fix's second pass) the base starts where the strength says, as diffusers'
SDXL img2img and inpaint pipelines do with denoising_end and denoising_start.

A refiner's U-Net reads five time ids instead of the base's six: the original size, the crop's
top-left corner and an aesthetic score, which tells it how good a picture to draw (diffusers'
defaults: 6.0 for the prompt, 2.5 for the negative prompt)."""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.inpainting import KnownRegion
from ldm.diffusion.samplers import make_sampler
from ldm.formats.model_folder import ModelError, load_refiner
from ldm.pipeline.hires import counted_callbacks
from ldm.pipeline.request import SampleRequest
from ldm.pipeline.task import BatchContext, Plan, Start
from ldm.settings import GenerationError, Settings

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline

AESTHETIC_SCORE = 6.0  # the prompt's (diffusers' default)
NEGATIVE_AESTHETIC_SCORE = 2.5  # the unconditional pass's


@lru_cache(maxsize=1)
def loaded_refiner(pipeline_class: type, path: Path, device: str, dtype: torch.dtype) -> "Pipeline":
    """The refiner at `path`, loaded once for the batches (and requests) that follow; a new
    path, device or dtype replaces it. (The class: the pipeline's layer is above this one.)"""
    return pipeline_class(load_refiner(path, device=device, dtype=dtype))


def refiner_for(pipe: "Pipeline", settings: Settings) -> "Pipeline":
    """The request's refiner, loaded; GenerationError in one line for a folder that is not one,
    or when the base model is not an SDXL model whose latents it could go on from."""
    if not getattr(backbone_of(pipe.components.denoiser), "takes_time_ids", False):
        raise GenerationError("a refiner goes on from an SDXL base model's latents; this model is not an SDXL model")
    components = pipe.components
    try:
        return loaded_refiner(type(pipe), Path(settings.refiner), str(components.device), components.dtype)
    except ModelError as error:
        raise GenerationError(str(error)) from None


def aesthetic_ids(refiner: "Pipeline", size: tuple[int, int], score: float, n: int, settings: Settings) -> torch.Tensor:
    """time_ids (n, 5): original height, width (the drawn size, A1111's default), crop top, left
    (0, 0), as `settings` may override them, and `score`."""
    width, height = size
    components = refiner.components
    original, crop = settings.original_size or (height, width), settings.crop_top_left or (0, 0)
    ids = torch.tensor([*original, *crop, score], dtype=components.dtype, device=components.device)
    return ids.expand(n, -1)


def check_base_reaches_switch(pipe: "Pipeline", settings: Settings, plan: Plan) -> None:
    """GenerationError in one line when a picture's run (img2img, inpaint, the hires fix's
    second pass at `plan.strength`) starts after the switch: the base model would draw nothing."""
    sampler = make_sampler(settings.sampler, pipe.components.scheduler_config)
    timesteps = sampler.set_timesteps(plan.steps or settings.steps, strength=plan.strength)
    if len(timesteps) and not len(sampler.before_switch(timesteps, settings.refiner_switch_at)):
        what = "hires strength" if settings.hires_fix else "strength"
        raise GenerationError(
            f"at {what} {plan.strength:g} the run starts after the refiner switch at {settings.refiner_switch_at:g}: "
            f"the base model would draw nothing; give a higher {what} or a later refiner switch"
        )


def sample_with_refiner(
    pipe: "Pipeline", batch: list[Settings], context: BatchContext, start: Start, plan: Plan, generators: list[torch.Generator]
) -> torch.Tensor:
    """The base's steps down to the switch, then the refiner's rest; clean latents (B, C, h, w).
    With an input picture (img2img, inpaint, the hires fix's second pass) the base starts at the
    plan's strength. Inpainting: the refiner keeps the base's latents outside the mask, with
    noise of its own, as diffusers' SDXL inpaint pipeline does given the base's latents."""
    settings = context.settings
    refiner = refiner_for(pipe, settings)
    switch, steps, size = settings.refiner_switch_at, plan.steps or settings.steps, plan.size
    refiner_steps = round(steps * (1 - switch))
    callback = start.callback or context.callback  # the hires fix's second pass counts the first's steps too
    first_callback, second_callback = counted_callbacks(callback, max(int(steps * plan.strength) - refiner_steps, 1), refiner_steps)
    start = dataclasses.replace(start, callback=first_callback)
    latents = pipe.sample_batch(context, start, size, generators, plan.strength, plan.steps, switch_end=switch)
    context.clock.lap("sampling")
    cond, uncond = refiner.prompt_contexts(batch, context.notes)
    n = len(generators)
    cond = cond.map(lambda c: c.with_vector("time_ids", aesthetic_ids(refiner, size, AESTHETIC_SCORE, n, settings)))
    if uncond is not None:
        uncond = uncond.map(lambda c: c.with_vector("time_ids", aesthetic_ids(refiner, size, NEGATIVE_AESTHETIC_SCORE, n, settings)))
    noise, known_region = latents, None
    if start.repaint_mask is not None:
        noise = refiner.noise(generators, *size)  # (B, C, h, w) what the kept region is noised with
        known_region = KnownRegion(latents, start.repaint_mask)
    request = SampleRequest(
        cond, uncond, noise, steps, settings.cfg, settings.sampler, generators, second_callback or callback,
        context.progress, init_latents=latents, known_region=known_region, switch_start=switch,
    )  # fmt: skip
    return refiner.sample(request)
