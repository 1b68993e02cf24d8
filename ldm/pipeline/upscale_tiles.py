"""A whole upscale, in one piece or in overlapping tiles of the input blended without seams.

A picture whose upscale does not fit in memory (or with `tile` set) is cut into overlapping
tiles; each is upscaled as a task of its own (ldm.pipeline.upscale.Upscale with a box: its
noise is the crop of the whole picture's, so tiles agree where they overlap, up to what each
one's denoiser sees), and the results are blended with weights that ramp linearly across
each overlap, so no edge shows. Seams against an untiled upscale: README, "Upscaling".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
from PIL import Image

from ldm.diffusion.sampling import StepInfo
from ldm.memory import available_bytes, image_bytes
from ldm.pipeline.color_fix import color_fixed
from ldm.pipeline.result import GenerationResult
from ldm.pipeline.upscale import Box, Upscale, check_upscale_input
from ldm.png_info import ImageParameters
from ldm.settings import MIN_TILE, Limits, Settings, check_settings

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline

OVERLAP_SHARE = 4  # tiles overlap by a quarter of their side (low-resolution pixels)


def upscale_picture(
    pipe: "Pipeline",
    settings: Settings,
    image: Image.Image,
    limits: Limits,
    callback: Optional[Callable[[StepInfo], None]] = None,
    progress: bool = True,
) -> GenerationResult:
    """`settings.n` upscales of `image` (image k with seed + k), in tiles when `settings.tile`
    asks for them or the whole does not fit in memory."""
    check_settings(settings, Upscale.mode, limits)
    output_size = check_upscale_input(pipe, settings, image.size, limits)
    color_fix = pipe.components.upscaler.color_fix if settings.color_fix is None else settings.color_fix
    settings = settings.with_seed().replace(color_fix=color_fix)  # every tile with the same seeds
    tile = settings.tile or fitting_tile(pipe, settings, image.size)
    if tile is None or tile >= max(image.size):
        result = pipe.run(Upscale(image), settings.replace(tile=None), callback=callback, progress=progress, limits=limits)
    else:
        result = upscale_in_tiles(pipe, settings, image, tile, output_size, limits, callback, progress)
    if color_fix:  # on the whole picture: tiles blended first
        result.images = [color_fixed(picture, image, sigma=pipe.vae_scale) for picture in result.images]
        result.notes.append("colour fix: the input's broad colours kept under the drawn detail (--color-fix off to draw them too)")
    return result


def upscale_in_tiles(
    pipe: "Pipeline", settings: Settings, image: Image.Image, tile: int, output_size, limits: Limits, callback, progress: bool
) -> GenerationResult:
    """The upscale drawn in overlapping tiles of `tile` input pixels, blended."""
    boxes = tile_boxes(image.size, tile, max(1, tile // OVERLAP_SHARE))
    pieces = [pipe.run(Upscale(image, box), settings, callback=callback, progress=progress, limits=limits) for box in boxes]
    scale = pipe.vae_scale
    scaled = [tuple(side * scale for side in box) for box in boxes]
    result = GenerationResult(images=[blend([p.images[k] for p in pieces], scaled, output_size) for k in range(settings.n)])
    result.parameters = [
        ImageParameters(p.settings.replace(tile=tile), p.mode, p.model, *output_size) for p in pieces[0].parameters
    ]
    for piece in pieces:
        result.add_notes_and_timings(piece)
    result.notes.append(f"upscaled in {len(boxes)} tiles of {tile} px (x{scale})")
    return result


def fitting_tile(pipe: "Pipeline", settings: Settings, size: tuple[int, int]) -> Optional[int]:
    """None when one image of the whole upscale fits in the memory there is; else the largest
    tile side (low-resolution pixels) whose upscale does."""
    width, height = size
    scale = pipe.vae_scale
    guided = pipe.two_passes(settings.cfg if settings.cfg is not None else 0.0)
    need = image_bytes(pipe.components, width * scale, height * scale, guided)
    have = available_bytes(pipe.components.device)
    if need <= have:
        return None
    return max(MIN_TILE, int(math.sqrt(width * height * have / need)))


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where tiles of `tile` pixels start along a side of `length`, evenly spread, each
    overlapping the next by at least `overlap`."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_boxes(size: tuple[int, int], tile: int, overlap: int) -> list[Box]:
    """The tiles covering a picture of `size`, row by row."""
    width, height = size
    xs, ys = tile_starts(width, tile, overlap), tile_starts(height, tile, overlap)
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def ramp(length: int, before: int, after: int) -> np.ndarray:
    """Weights along one side of a tile: rising across the `before` pixels it shares with the
    previous tile, falling across the `after` it shares with the next, 1 between."""
    weights = np.ones(length, dtype=np.float64)
    if before:
        weights[:before] = (np.arange(before) + 0.5) / before
    if after:
        weights[length - after :] = np.minimum(weights[length - after :], (np.arange(after)[::-1] + 0.5) / after)
    return weights


def blend(pieces: list[Image.Image], boxes: list[Box], size: tuple[int, int]) -> Image.Image:
    """One picture of `size` from the tiles `pieces` placed at `boxes` (output pixels), each
    weighted by its ramps across the overlaps with its neighbours."""
    width, height = size
    total = np.zeros((height, width, 3), dtype=np.float64)
    weight = np.zeros((height, width, 1), dtype=np.float64)
    for piece, (left, top, right, bottom) in zip(pieces, boxes):
        rows = ramp(bottom - top, *shared(boxes, top, bottom, along=1))
        columns = ramp(right - left, *shared(boxes, left, right, along=0))
        weights = np.outer(rows, columns)[..., None]  # (h, w, 1)
        total[top:bottom, left:right] += np.asarray(piece, dtype=np.float64) * weights
        weight[top:bottom, left:right] += weights
    return Image.fromarray(np.clip(np.round(total / weight), 0, 255).astype(np.uint8))


def shared(boxes: list[Box], start: int, end: int, along: int) -> tuple[int, int]:
    """How many pixels the span [start, end) shares with the tiles before and after it along
    axis `along` (0: columns, 1: rows)."""
    starts = sorted({box[along] for box in boxes})
    ends = sorted({box[along + 2] for box in boxes})
    before = max((e - start for e in ends if start < e < end), default=0)
    after = max((end - s for s in starts if start < s < end), default=0)
    return before, after
