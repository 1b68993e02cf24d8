"""A request's images in batches: as many at a time as fit in memory, with the request's
LoRAs and textual-inversion embeddings applied for it alone and its ControlNets loaded and
checked before any work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from PIL import Image

from ldm.formats.model_folder import ModelError
from ldm.lora.apply import apply_loras
from ldm.lora.embeddings import request_embeddings
from ldm.lora.refs import without_lora_tags
from ldm.memory import available_bytes, gib, image_bytes, vae_bytes
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
    settings = settings.replace(vae_tiling=vae_tiling(pipe, settings, size))
    batch_size = settings.batch_size or fitting_batch_size(pipe, settings, size)
    each = [settings.replace(seed=settings.seed + k, n=1) for k in range(settings.n)]
    conditioner = pipe.components.conditioner
    try:
        texts = [without_lora_tags(settings.prompt), settings.negative]
        embeddings = request_embeddings(pipe.components, pipe.embeddings_dir, texts)
        loras = apply_loras(pipe.components, settings.lora_files())  # this request's only
    except (ValueError, ModelError) as error:  # a file not found, not safetensors, not fitting
        raise GenerationError(str(error)) from None
    result.notes += [note for note in embeddings.notes if note not in result.notes]
    extra = dict(embeddings.png_fields())
    try:
        conditioner.embeddings = embeddings.vocabulary  # the prompts' embedding names read as their vectors
        for start in range(0, settings.n, batch_size):
            batch = each[start : start + batch_size]
            result.images += run_batch(batch)
            result.parameters += [ImageParameters(s, mode, pipe.components.name, *(recorded_size or size), extra) for s in batch]
    finally:
        loras.unload()  # the next request draws with the base model exactly, even after an error
        conditioner.embeddings = None
    return result


def vae_tiling(pipe: "Pipeline", settings: Settings, size: tuple[int, int]) -> str:
    """"on" or "off": `auto` tiles when one image's whole VAE pass would not fit in the
    memory there is."""
    if settings.vae_tiling != "auto":
        return settings.vae_tiling
    return "on" if vae_bytes(pipe.components, *size) > available_bytes(pipe.components.device) else "off"


def fitting_batch_size(pipe: "Pipeline", settings: Settings, size: tuple[int, int]) -> int:
    """How many images of `size` one batch can hold in the memory there is (VAE tiled as
    `settings.vae_tiling` says: "on" or "off"); GenerationError when not even one fits."""
    tile = pipe.vae_tile if settings.vae_tiling == "on" else None
    need = image_bytes(pipe.components, *size, guided=pipe.two_passes(settings.cfg), vae_tile=tile)
    have = available_bytes(pipe.components.device)
    if need > have:
        raise GenerationError(
            "one {}x{} image needs about {} on {}{}, more than the {} available: choose a smaller size".format(
                *size, gib(need), pipe.components.device, " with a tiled VAE" if tile else "", gib(have)
            )
        )
    return max(1, min(settings.n, have // need))
