"""Generate, then upscale: another model's images redrawn by an upscaler, each with its own
prompt, negative prompt and seed; the PNG parameters record both (the generation's fields,
then the upscale's, as AUTOMATIC1111 records a hires fix after the first pass)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ldm.lora.refs import without_lora_tags
from ldm.pipeline.result import GenerationResult
from ldm.png_info import ImageParameters
from ldm.settings import DEFAULT_LIMITS, Limits, Settings

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline

# The upscale's fields under the names they have after a generation's.
UPSCALE_FIELDS = {"Steps": "Upscale steps", "Sampler": "Upscale sampler", "CFG scale": "Upscale CFG scale",
                  "Noise level": "Noise level", "Tile size": "Upscale tile"}  # fmt: skip


def upscale_fields(upscaled: ImageParameters) -> dict[str, str]:
    """What an upscale adds to the parameters of the image it started from."""
    fields = upscaled.fields()
    added = {"Upscaler": upscaled.model, "Upscaled size": f"{upscaled.width}x{upscaled.height}"}
    return {**added, **{ours: fields[key] for key, ours in UPSCALE_FIELDS.items() if key in fields}}


def upscale_result(
    upscaler: "Pipeline", result: GenerationResult, *, limits: Limits = DEFAULT_LIMITS, progress: bool = True, **options
) -> GenerationResult:
    """Each image of `result` upscaled by `upscaler` with the image's prompt (its LoRA tags
    are the first model's), negative prompt and seed; `options` (noise_level, tile, steps,
    sampler, cfg) are the upscale's, its model's own defaults where not given."""
    upscaled = GenerationResult(images=[], notes=list(result.notes), timings=dict(result.timings))
    for image, source in zip(result.images, result.parameters):
        first = source.settings
        request = Settings(prompt=without_lora_tags(first.prompt), negative=first.negative, seed=first.seed)
        one = upscaler.upscale(request, image, limits=limits, progress=progress, **options)
        upscaled.images += one.images
        upscaled.parameters += [
            ImageParameters(first, source.mode, source.model, source.width, source.height, {**source.extra, **upscale_fields(one.parameters[0])})
        ]
        upscaled.add_notes_and_timings(one, prefix="upscale ")
    return upscaled
