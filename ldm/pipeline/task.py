"""What a generation mode is to the pipeline: a task that plans a request and starts its batches.

A task checks its own inputs and chooses the size the model draws at (`plan`); for each batch
it draws the starting latents and the image-side conditions (`Plan.start`) and turns the
decoded images into the results (`Plan.finish`); a start may sample a run of its own first
(the hires fix's first pass, with the batch's context). Everything else (text, guidance, sampling,
decoding, batching, LoRAs, ControlNets) is the pipeline's and the same for every task, so a
new mode (an upscaler, a hires fix) is one more small task file."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Optional, Protocol

import torch
from PIL import Image

from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.inpainting import KnownRegion
from ldm.diffusion.sampling import StepInfo
from ldm.settings import MICRO_CONDITIONING, GenerationError, Limits, Settings
from ldm.timing import Stopwatch

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline


@dataclass
class Start:
    """A batch's starting point: the noise, and what the task adds to it."""

    noise: torch.Tensor  # (B, C, h, w) unit-variance noise
    init_latents: Optional[torch.Tensor] = None  # (B, C, h, w) the input's latents (img2img, 4-channel inpainting)
    known_region: Optional[KnownRegion] = None  # put back after every step (4-channel inpainting)
    concat: Optional[torch.Tensor] = None  # (B, C', h, w) channels beside the latents (9-channel inpainting, an upscaler's picture)
    read_input: bool = False  # whether an input picture was read (timed as "encode")
    callback: Optional[Callable[[StepInfo], None]] = None  # the run's step callback when not the batch's (a pass of several)
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)  # named image-side inputs, each (B, ...): an upscaler's "noise_level"
    repaint_mask: Optional[torch.Tensor] = None  # (1, 1, h, w) 1 = repaint (inpainting): what a refiner keeps outside

    def conditioned(self, cond: Conditioning) -> Conditioning:
        """`cond` (the text side's) with this start's image-side conditions; the unconditional
        pass shares them (ldm.diffusion.guidance)."""
        return cond.replace(concat=self.concat, vectors={**cond.vectors, **self.vectors})


@dataclass
class BatchContext:
    """What a batch's sampling runs share, for a start that samples a run of its own (the
    hires fix's first pass: Pipeline.sample_batch)."""

    settings: Settings  # the batch's first: its prompt, sampler, steps, cfg and ControlNets are the batch's
    seeds: list[int]  # one per image
    cond: Conditioning
    uncond: Optional[Conditioning]
    callback: Optional[Callable[[StepInfo], None]]
    progress: bool
    notes: list[str]  # the result's notes
    clock: Stopwatch  # the result's timings


@dataclass
class Plan:
    """A request as a task has planned it."""

    settings: Settings  # the request's settings (a task may adjust them: ControlNet images cropped)
    size: tuple[int, int]  # (width, height) the model draws at
    output_size: tuple[int, int]  # (width, height) of the results, as the parameters record it (unless recorded_size)
    start: Callable[["Pipeline", list[torch.Generator], BatchContext], Start]  # the batch's start, for its generators
    strength: float = 1.0  # the share of the steps that run (1: from pure noise)
    finish: Callable[[list[Image.Image]], list[Image.Image]] = list  # decoded images -> results
    unchanged: Optional[Image.Image] = None  # the result of every image when there is nothing to draw
    steps: Optional[int] = None  # the run's schedule, when not the settings' steps (the hires fix's second pass)
    recorded_size: Optional[tuple[int, int]] = None  # the PNG's Size when not output_size (the hires fix's first pass)


class Task(Protocol):
    """A generation mode (one of ldm.settings.MODES)."""

    mode: str

    def plan(self, pipe: "Pipeline", settings: Settings, limits: Limits, notes: list[str]) -> Plan:
        """Checks the task's inputs against `settings` and `limits` (GenerationError), appends
        what the user should be told to `notes`, and plans the work."""
        ...


def refuse_upscaler(pipe: "Pipeline") -> None:
    """Only the upscale mode gives an upscaler's denoiser the low-resolution picture it reads."""
    if pipe.components.upscaler is not None:
        raise GenerationError("this model is an upscaler (its denoiser reads a low-resolution picture): use upscale (ldm-upscale)")


def refuse_inpainting_model(pipe: "Pipeline") -> None:
    """A mode without a mask cannot drive a model whose denoiser reads one (nor an upscaler)."""
    refuse_upscaler(pipe)
    if pipe.is_inpainting_model:
        raise GenerationError("this model is an inpainting model (its denoiser takes a mask): use inpaint")


def size_conditions(pipe: "Pipeline", size: tuple[int, int], n: int) -> dict[str, torch.Tensor]:
    """SDXL's micro-conditioning for `n` images drawn at `size` (width, height), as
    `Start.vectors`: time_ids (n, 6) = (original height, width, crop top, left, target height,
    width) with A1111's defaults (original = target = the drawn size, no crop); the
    unconditional pass shares them, as diffusers' does. Nothing for other models."""
    if not getattr(backbone_of(pipe.components.denoiser), "takes_time_ids", False):
        return {}
    width, height = size
    ids = torch.tensor([height, width, 0, 0, height, width], dtype=pipe.components.dtype, device=pipe.components.device)
    return {"time_ids": ids.expand(n, -1)}


def micro_conditioned(start: Start, settings: Settings) -> Start:
    """`start` with the SDXL size ids that `settings` override (original size, crop's top-left
    corner, target size: ldm.settings.MICRO_CONDITIONING) in place of the drawn size's defaults."""
    ids = start.vectors.get("time_ids")
    given = [getattr(settings, name) for name in MICRO_CONDITIONING]
    if ids is None or not any(given):
        return start
    ids = ids.clone()  # (n, 6)
    for k, pair in enumerate(given):
        if pair is not None:
            ids[:, 2 * k : 2 * k + 2] = torch.tensor(pair, dtype=ids.dtype, device=ids.device)
    return dataclasses.replace(start, vectors={**start.vectors, "time_ids": ids})


def refuse_micro_conditioning(pipe: "Pipeline", settings: Settings) -> None:
    """Size and crop ids are SDXL's: a model without them cannot be told of them."""
    given = [name for name in MICRO_CONDITIONING if getattr(settings, name) is not None]
    if given and not getattr(backbone_of(pipe.components.denoiser), "takes_time_ids", False):
        raise GenerationError(f"{given[0]} is SDXL's micro-conditioning; this model does not take size or crop conditioning")


def input_pixels(pipe: "Pipeline", pixels: torch.Tensor, n: int) -> torch.Tensor:
    """One input picture (1, 3, H, W) in [-1, 1] as a batch of `n` on the model's device."""
    return pixels.expand(n, -1, -1, -1).to(device=pipe.components.device, dtype=pipe.components.dtype)
