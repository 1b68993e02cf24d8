"""Whether one denoising step at a size finishes in reasonable time, told before any work.

Self-attention over n latent cells costs 4 n^2 d operations per layer (queries x keys, then
weights x values, d channels wide): a picture of twice the side has 16 times the cost, and
at large sizes nearly all of a step's time goes there (the built-in model on the 2-core CPU:
70 % of a step at 512 px, 94 % at 768 px; one step at 1448 px took 11 minutes). The rule
counts those operations from the denoiser's layers (its backbone adapter's attention_layers) and divides by the device's attention
speed (ATTENTION_SPEED, measured on the 2-core CPU; docs/benchmarks.md); a step over
Limits.max_step_seconds is refused with the size that would fit.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from ldm.diffusion.backbones import backbone_of
from ldm.settings import GenerationError, Limits

if TYPE_CHECKING:
    from ldm.pipeline.core import Pipeline

# Self-attention operations per second: a CPU's per thread (the built-in model measured
# 2.2-2.5 G a thread with 2 threads at 256-768 px, 1.4 G at 1448 px where the keys outgrow
# the caches: the rule errs towards allowing), an accelerator's as a whole (an assumed,
# conservative figure for fused fp16/fp32 kernels, not measured in this project).
ATTENTION_SPEED = {"cpu": 2.5e9, "cuda": 2e13, "mps": 2e12}
OTHER_DEVICE_SPEED = 2e12


def attention_operations(pipe: "Pipeline", width: int, height: int, guided: bool) -> float:
    """Multiply-adds x 2 of one denoising step's self-attention at width x height (with
    classifier-free guidance, two images)."""
    cells = (width // pipe.vae_scale) * (height // pipe.vae_scale)
    per_image = sum(4.0 * tokens * tokens * channels for tokens, channels in backbone_of(pipe.components.denoiser).attention_layers(cells))
    return per_image * (2 if guided else 1)


def attention_speed(device: torch.device) -> float:
    if device.type == "cpu":
        return ATTENTION_SPEED["cpu"] * torch.get_num_threads()
    return ATTENTION_SPEED.get(device.type, OTHER_DEVICE_SPEED)


def step_seconds(pipe: "Pipeline", width: int, height: int, guided: bool) -> float:
    """The estimated seconds of one denoising step's self-attention at width x height."""
    return attention_operations(pipe, width, height, guided) / attention_speed(pipe.components.device)


def check_step_time(pipe: "Pipeline", size: tuple[int, int], guided: bool, limits: Limits) -> None:
    """GenerationError, with the largest size of the same shape that fits, when one step at
    `size` would take longer than the limit."""
    seconds = step_seconds(pipe, *size, guided)
    if seconds <= limits.max_step_seconds:
        return
    width, height = fitting_size(pipe, size, guided, limits.max_step_seconds)
    raise GenerationError(
        f"one denoising step at {size[0]}x{size[1]} is about {shown_seconds(seconds)} s of full-resolution attention on "
        f"{pipe.components.device.type} (the limit is {limits.max_step_seconds:g} s, --max-step-seconds): draw at "
        f"{width}x{height} or smaller, e.g. at the model's {pipe.default_size} px with --hires-scale"
    )


def shown_seconds(seconds: float) -> str:
    return f"{seconds:.0f}" if seconds >= 10 else f"{seconds:.2g}"


def fitting_size(pipe: "Pipeline", size: tuple[int, int], guided: bool, seconds: float) -> tuple[int, int]:
    """The largest size of `size`'s shape (in multiples of 8 and of the model's) whose step
    fits `seconds`; attention grows with the pixel count squared: the side shrinks by the 4th root."""
    multiple = math.lcm(8, pipe.size_multiple)
    shrink = (seconds / step_seconds(pipe, *size, guided)) ** 0.25
    width, height = (max(multiple, math.floor(side * shrink / multiple) * multiple) for side in size)
    while step_seconds(pipe, width, height, guided) > seconds and min(width, height) > multiple:
        width, height = max(multiple, width - multiple), max(multiple, height - multiple)
    return width, height
