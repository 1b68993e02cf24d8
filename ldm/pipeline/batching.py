"""A request's images in batches: as many at a time as fit in memory, with the request's
LoRAs applied for it alone and its ControlNets loaded and checked before any work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from PIL import Image

from ldm.formats.model_folder import ModelError
from ldm.lora.apply import apply_loras
from ldm.memory import available_bytes, gib, image_bytes
from ldm.pipeline.result import GenerationResult
from ldm.png_info import ImageParameters
from ldm.settings import GenerationError, Settings

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline


def in_batches(
    pipe: "Pipeline",
    result: GenerationResult,
    settings: Settings,
    mode: str,
    size: tuple[int, int],
    run_batch: Callable[[list[Settings]], list[Image.Image]],
    recorded_size: Optional[tuple[int, int]] = None,
) -> GenerationResult:
    """Fills `result` with `n` images of `size` made by run_batch(per-image settings), as many
    at a time as fit in memory (or `batch_size`); image k uses seed `seed + k`. The PNG
    parameters record `recorded_size` when given (the hires fix's first pass, as A1111 does)."""
    settings = settings.with_seed()
    if settings.controls:  # each unit names its ControlNet, loaded and checked: an error now, before any work
        settings = settings.replace(controls=pipe.controlnets.resolve(settings.controls))
        pipe.controlnets.load_for(settings.controls, pipe.components)
    batch_size = settings.batch_size or fitting_batch_size(pipe, settings, size)
    each = [settings.replace(seed=settings.seed + k, n=1) for k in range(settings.n)]
    try:
        loras = apply_loras(pipe.components, settings.lora_files())  # this request's only
    except (ValueError, ModelError) as error:  # a file not found, not safetensors, not fitting
        raise GenerationError(str(error)) from None
    try:
        for start in range(0, settings.n, batch_size):
            batch = each[start : start + batch_size]
            result.images += run_batch(batch)
            result.parameters += [ImageParameters(s, mode, pipe.components.name, *(recorded_size or size)) for s in batch]
    finally:
        loras.unload()  # the next request draws with the base model exactly, even after an error
    return result


def fitting_batch_size(pipe: "Pipeline", settings: Settings, size: tuple[int, int]) -> int:
    """How many images of `size` one batch can hold in the memory there is; GenerationError
    when not even one fits."""
    need = image_bytes(pipe.components, *size, guided=pipe.two_passes(settings.cfg))
    have = available_bytes(pipe.components.device)
    if need > have:
        raise GenerationError(
            "one {}x{} image needs about {} on {}, more than the {} available: choose a smaller size".format(
                *size, gib(need), pipe.components.device, gib(have)
            )
        )
    return max(1, min(settings.n, have // need))
