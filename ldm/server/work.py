"""How long a request would keep the worker busy, estimated before it is queued, so that one
request (1000 images x 1000 steps, or one 1448x1448 image: 11 minutes a step on a CPU) cannot
hold the server for hours.

The estimate: every image costs its denoiser passes plus a VAE decode (and an encode when it
starts from a picture). One pass over n latent cells costs c + a*n + b*n^2 seconds: per-call
overheads, convolutions that grow with the cells, attention with their square. c, a and b are
measured on this machine when the server starts (and when it switches models): passes and
decodes at the model's own size, at half and at a quarter of its side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

from ldm.hires import works_on_latents
from ldm.pipeline import Pipeline, SampleRequest
from ldm.pipeline.hires import HiresFix
from ldm.pipeline.modes import task_for
from ldm.pipeline.step_time import check_step_time
from ldm.server.a1111 import Job
from ldm.settings import GenerationError, Limits, Settings

CONTROLNET_SHARE = 0.5  # a ControlNet is a copy of the denoiser's encoder half: ~half a pass
HEUN_PASSES_PER_STEP = 2  # a second-order step evaluates the denoiser twice


@dataclass(frozen=True)
class Cost:
    """Seconds of one call on one image of n latent cells: fixed + linear * n + quadratic * n^2
    (per-call overheads, convolutions, attention)."""

    fixed: float
    linear: float
    quadratic: float

    def seconds(self, cells: int) -> float:
        return self.fixed + self.linear * cells + self.quadratic * cells * cells

    @classmethod
    def fit(cls, cells: tuple[int, int, int], seconds: tuple[float, float, float]) -> "Cost":
        """Through three measurements (growing cells). Timing noise can make a coefficient
        negative: then a straight line through the two larger ones, at least as steep as the
        largest's average, so that large requests are over- rather than underestimated."""
        import numpy as np

        coefficients = np.linalg.solve(np.array([[1.0, n, n * n] for n in cells]), np.array(seconds, dtype=float))
        if (coefficients >= 0).all():
            return cls(*map(float, coefficients))
        (_, n1, n2), (_, t1, t2) = cells, seconds
        linear = max((t2 - t1) / (n2 - n1), 0.0)
        return cls(max(t2 - linear * n2, 0.0), linear, 0.0)


@dataclass(frozen=True)
class Speed:
    """This machine's measured speed for one model."""

    denoiser: Cost  # one pass (one image, no guidance batch)
    vae: Cost  # one decode (an encode is taken as costing the same)
    latent_cell: int  # pixels per latent cell (64 for KL-f8), to count cells from pixels


@dataclass(frozen=True)
class Estimate:
    seconds: float
    images: int
    steps: int
    width: int
    height: int

    def describe(self) -> str:
        return f"{_count(self.images, 'image')} x {_count(self.steps, 'step')} at {self.width}x{self.height}"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def passes_per_image(settings: Settings, mode: str, two_passes: bool) -> float:
    """Denoiser passes one image takes: the steps that run (img2img runs steps x strength),
    twice for Heun, twice with classifier-free guidance, plus the ControlNets'."""
    steps = settings.steps
    if mode != "txt2img":
        steps = min(int(steps * settings.strength_for(mode)), steps)
    calls = HEUN_PASSES_PER_STEP * steps - 1 if settings.sampler == "heun" and steps else steps
    per_call = (2 if two_passes else 1) * (1 + CONTROLNET_SHARE * len(settings.controls or ()))
    return calls * per_call



def estimate(
    speed: Speed, settings: Settings, mode: str, images: int, size: tuple[int, int], two_passes: bool, first_size: Optional[tuple[int, int]] = None
) -> Estimate:
    """`settings` with the model's defaults applied; `images` in all; `size` the work size;
    `first_size`: the hires fix's first pass, before its second at `size`."""
    cells = size[0] * size[1] // speed.latent_cell
    decodes = 1 if mode == "txt2img" else 2  # an edit encodes its picture too
    per_image = passes_per_image(settings, mode, two_passes) * speed.denoiser.seconds(cells) + decodes * speed.vae.seconds(cells)
    if first_size is not None:
        per_image = hires_seconds(speed, settings, first_size, cells, two_passes)
    return Estimate(images * per_image, images, settings.steps, *size)


def hires_seconds(speed: Speed, settings: Settings, first_size: tuple[int, int], cells: int, two_passes: bool) -> float:
    """One image of the hires fix: a txt2img pass at `first_size`, the hires steps that run at
    `cells`, a decode; a pixel upscaler decodes the first picture and encodes the upscaled one too."""
    first = first_size[0] * first_size[1] // speed.latent_cell
    hires = settings.hires_pass()
    schedule, share = hires.schedule()
    second = settings.replace(steps=min(int(schedule * share), schedule))
    seconds = passes_per_image(settings, "txt2img", two_passes) * speed.denoiser.seconds(first)
    seconds += passes_per_image(second, "txt2img", two_passes) * speed.denoiser.seconds(cells) + speed.vae.seconds(cells)
    if not works_on_latents(hires.upscaler):
        seconds += speed.vae.seconds(first) + speed.vae.seconds(cells)
    return seconds


def check_work(found: Estimate, limit_seconds: float) -> None:
    if found.seconds > limit_seconds:
        raise GenerationError(
            f"this request is about {duration(found.seconds)} of work on this server ({found.describe()}), over its "
            f"limit of {duration(limit_seconds)} per request: ask for fewer images, steps or pixels"
        )


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


TIMED_STEPS = 2  # per measurement: spreads the sampler's set-up over steps, as a real job does


def measure_speed(pipeline: Pipeline) -> Speed:
    """Times denoiser passes and a VAE decode at the model's size, at half and at a quarter of
    its side, after a warm-up at the largest (the first call allocates; smaller ones reuse)."""
    import torch

    multiple, large = pipeline.size_multiple, pipeline.default_size
    sides = sorted({max(multiple, large // k // multiple * multiple) for k in (4, 2)} | {large})
    if len(sides) < 3:  # a model too small to shrink: measure larger than its size instead
        sides = [large, 2 * large, 4 * large]
    context = pipeline.encode_text([""])

    def seconds_at(side: int, steps: int) -> tuple[float, float]:
        noise = torch.randn(pipeline.latent_shape(1, side, side), generator=torch.Generator().manual_seed(0))
        started = time.perf_counter()
        latents = pipeline.sample(SampleRequest(context, None, noise, steps, 1.0, progress=False))
        latents.cpu()  # waits for an accelerator's queued work: its calls return before it is done
        sampled = time.perf_counter()
        pipeline.decode(latents).cpu()
        return (sampled - started) / steps, time.perf_counter() - sampled

    seconds_at(sides[-1], 1)  # warm-up
    timings = [seconds_at(side, TIMED_STEPS) for side in sides]
    cell = pipeline.vae_scale**2
    cells = tuple(side * side // cell for side in sides)
    denoiser = Cost.fit(cells, tuple(t for t, _ in timings))
    vae = Cost.fit(cells, tuple(t for _, t in timings))
    return Speed(denoiser, vae, cell)


def job_size(pipeline: Pipeline, job: Job) -> tuple[Settings, tuple[int, int]]:
    """A request's settings with the model's sampling defaults applied, and the size it draws at."""
    settings = pipeline.request(job.settings, {})
    return settings, task_for(job.mode, job.image, job.mask, settings).draw_size(pipeline, settings)


def check_job_steps(pipeline: Pipeline, job: Job, limits: Limits) -> None:
    """GenerationError, before the job is queued, when one of its steps would take too long
    (ldm.pipeline.step_time: the pipeline checks it too, but only once the job runs)."""
    settings, size = job_size(pipeline, job)
    if settings.strength_for(job.mode) > 0:
        check_step_time(pipeline, size, pipeline.two_passes(settings.cfg), limits)


def estimate_job(speed: Speed, pipeline: Pipeline, job: Job) -> Estimate:
    """A request's whole work: all its images, with the model's sampling defaults applied."""
    settings, size = job_size(pipeline, job)
    task = task_for(job.mode, job.image, job.mask, settings)
    first_size = task.sizes(pipeline, settings)[0] if isinstance(task, HiresFix) else None
    return estimate(speed, settings, job.mode, settings.n * job.iterations, size, pipeline.two_passes(settings.cfg), first_size)


def describe_speed(speed: Speed, pipeline: Pipeline) -> str:
    size = pipeline.default_size
    cells = size * size // speed.latent_cell
    return f"measured here at {size}x{size}: {speed.denoiser.seconds(cells):.3g} s a denoiser pass, {speed.vae.seconds(cells):.3g} s a decode"
