"""Validation grids of the denoiser stages: one routine puts the trained network in eval mode,
draws a row of images per validation prompt through a Pipeline and saves the rows as
OUTPUT/samples/step-NNNNNN.png. A stage states only what a row shows (a `Grid`): text2img the
image, inpaint the held-out image and its inpainting, LoRA the image without and with it, LCM
the image at 1-8 steps, ControlNet the map, the image with and without it and an overlay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from PIL import Image
from torch import nn

from ldm.control.library import ControlNets
from ldm.diffusion.samplers import default_sampler
from ldm.models.components import Components
from ldm.pipeline import Pipeline
from ldm.training.config import ValidationSection
from ldm.training.stages import StageContext, first_samples

# row(pipeline, prompt, sample) -> the prompt's images, left to right; `sample` is a held-out
# (else training) sample when the grid asks for samples, else None.
Row = Callable[[Pipeline, str, Optional[dict]], list]


@dataclass
class Grid:
    """What a stage's validation draws."""

    row: Row
    columns: Optional[int] = None  # images per grid row; None: all in one row
    samples: bool = False  # rows get the first held-out (else training) samples, one per prompt in turn
    trained: Optional[nn.Module] = None  # in eval mode while drawing; None: the denoiser
    controlnets: Optional[ControlNets] = None  # what the pipeline may steer with


def generate_options(validation: ValidationSection, scheduler_config: dict) -> dict:
    """Pipeline.generate's (and inpaint's) keyword arguments from the validation section; its
    sampler by default the model's parameterisation's default (dpm++2m; flow-euler for flow)."""
    sampler = validation.sampler or default_sampler(scheduler_config)
    return dict(steps=validation.steps, cfg=validation.cfg, sampler=sampler, seed=validation.seed, progress=False)


def sample_grid(context: StageContext, components: Components, step: int, grid: Grid) -> dict:
    """Draws `grid` for the validation prompts (none: nothing) and saves it; no metrics."""
    prompts = context.config.validation.prompts
    if not prompts:
        return {}
    samples = [None]
    if grid.samples:
        samples = first_samples(context.open_dataset("validation"), len(prompts))
        samples = samples or first_samples(context.open_dataset("train"), len(prompts))
    trained = grid.trained or components.denoiser
    trained.eval()
    try:
        pipeline = Pipeline(components, grid.controlnets)
        images = [image for i, prompt in enumerate(prompts) for image in grid.row(pipeline, prompt, samples[i % len(samples)])]
    finally:
        trained.train()
    folder = context.output_dir / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    make_grid(images, grid.columns).save(folder / f"step-{step:06d}.png")
    return {}


def make_grid(images: list, columns: Optional[int] = None) -> Image.Image:
    """PIL images of one size -> one grid image (row-major)."""
    columns = columns or len(images)
    rows = (len(images) + columns - 1) // columns
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height))
    for i, image in enumerate(images):
        grid.paste(image, ((i % columns) * width, (i // columns) * height))
    return grid
