"""The hires fix, as AUTOMATIC1111 has it: txt2img at the first size (the model's own by
default), upscaled (ldm.pipeline.upscalers), then image-to-image at the larger size.

The second pass is what img2img would do with the upscaled latents: fresh noise from the same
seeds at the larger size (A1111 draws it so), the same prompt, sampler, cfg, LoRAs and
ControlNets (their images prepared for each pass's size, as A1111's ControlNet does), and
exactly the hires steps, the last ones of a schedule of steps / strength (ldm.hires.hires_schedule).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Optional

import torch

from ldm.diffusion.samplers import make_sampler
from ldm.diffusion.sampling import StepInfo
from ldm.hires import HiresSize, hires_size
from ldm.pipeline.task import BatchContext, Plan, Start, refuse_inpainting_model, size_conditions
from ldm.pipeline.upscalers import upscaler_for
from ldm.settings import GenerationError, Limits, Settings, check_hires_size, check_size

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline


class HiresFix:
    mode = "txt2img"

    def sizes(self, pipe: "Pipeline", settings: Settings) -> tuple[tuple[int, int], HiresSize]:
        """The first pass's (width, height), and where the second pass draws."""
        first = settings.width or pipe.default_size, settings.height or pipe.default_size
        return first, hires_size(*first, settings.hires_scale, settings.hires_resize, pipe.size_multiple)

    def draw_size(self, pipe: "Pipeline", settings: Settings) -> tuple[int, int]:
        """The results' size: the second pass's."""
        return self.sizes(pipe, settings)[1].size

    def plan(self, pipe: "Pipeline", settings: Settings, limits: Limits, notes: list[str]) -> Plan:
        first, second = self.sizes(pipe, settings)
        check_size(*first, limits)
        check_hires_size(second, limits)
        refuse_inpainting_model(pipe)
        pipe.check_model_size(*first)
        hires = settings.hires_pass()
        upscale = upscaler_for(hires.upscaler)
        schedule, share = hires.schedule()
        if 0 < share < 1:  # exactly the hires steps, however the model's sampler cuts a schedule
            share = make_sampler(settings.sampler, pipe.components.scheduler_config).strength_keeping(hires.steps, schedule)
        if schedule > limits.max_steps:
            raise GenerationError(
                f"the hires pass's {hires.steps} steps at strength {hires.strength:g} take a schedule of {schedule} steps, "
                f"over the limit of {limits.max_steps}: give fewer hires steps or a higher hires strength"
            )
        steps_run = (settings.steps, hires.steps if share > 0 else 0)

        def start(pipe: "Pipeline", generators: list[torch.Generator], batch: BatchContext) -> Start:
            first_callback, second_callback = counted_callbacks(batch.callback, *steps_run)
            n = len(generators)
            opening = Start(pipe.noise(generators, *first), callback=first_callback, vectors=size_conditions(pipe, first, n))
            latents = pipe.sample_batch(batch, opening, first, generators)
            batch.clock.lap("sampling")
            for generator, seed in zip(generators, batch.seeds):  # fresh noise from the same seeds, as A1111's
                generator.manual_seed(seed)
            latents = cropped(upscale(pipe, latents, second.upscaled, generators, batch), second, pipe.vae_scale)  # (B, C, H/8, W/8)
            batch.clock.lap("upscale")
            vectors = size_conditions(pipe, second.size, n)  # SDXL's size ids: each pass its own size
            return Start(pipe.noise(generators, *second.size), init_latents=latents, callback=second_callback, vectors=vectors)

        return Plan(settings, second.size, second.size, start, share, steps=schedule, recorded_size=first)


def cropped(latents: torch.Tensor, size: HiresSize, vae_scale: int) -> torch.Tensor:
    """The middle `size.size` of latents upscaled to `size.upscaled` (a resize of another aspect ratio)."""
    left, top = size.crop(vae_scale)
    width, height = (side // vae_scale for side in size.size)
    return latents[:, :, top : top + height, left : left + width]


Callback = Optional[Callable[[StepInfo], None]]


def counted_callbacks(callback: Callback, first_steps: int, second_steps: int) -> tuple[Callback, Callback]:
    """Step callbacks for the two passes that count steps over both (one progress bar, one ETA).
    During the first pass the second's count is estimated from the first's calls per step."""
    if callback is None:
        return None, None
    calls = {}

    def first(info: StepInfo) -> None:
        calls["first"] = info.total
        callback(dataclasses.replace(info, total=info.total + round(info.total * second_steps / max(first_steps, 1))))

    def second(info: StepInfo) -> None:
        before = calls.get("first", 0)
        callback(dataclasses.replace(info, step=before + info.step, total=before + info.total))

    return first, second
