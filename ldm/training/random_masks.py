"""Random inpainting masks for training (1 = repaint, 0 = keep), one kind per sample:
boxes, brush strokes, the whole image, or nothing, as SD-inpainting was trained (synthetic
masks, a quarter of them the whole image so that it stays a text-to-image model too).

Every draw comes from the generator passed in, so a seed gives the same masks anywhere.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw

# Default share of each kind; inpaint.mask_kinds in the training config overrides it.
DEFAULT_MASK_KINDS = {"box": 0.35, "brush": 0.35, "full": 0.25, "none": 0.05}


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _integer(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform in [low, high], both included."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _as_tensor(canvas: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(canvas) >= 128).to(torch.float32)  # (H, W)


def boxes(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """1 to 3 axis-aligned rectangles, each side 10% to 60% of the image's."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(_integer(generator, 1, 3)):
        w = max(1, round(width * _uniform(generator, 0.1, 0.6)))
        h = max(1, round(height * _uniform(generator, 0.1, 0.6)))
        left, top = _integer(generator, 0, width - w), _integer(generator, 0, height - h)
        draw.rectangle((left, top, left + w - 1, top + h - 1), fill=255)
    return _as_tensor(canvas)


def brush_strokes(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """1 to 4 thick polylines of 2 to 6 random points with round ends and joints, as a
    user's brush would paint (LaMa's and SD-inpainting's "free-form" masks)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    side = min(height, width)
    for _ in range(_integer(generator, 1, 4)):
        thickness = max(2, round(side * _uniform(generator, 0.05, 0.15)))
        points = [(_uniform(generator, 0, width - 1), _uniform(generator, 0, height - 1)) for _ in range(_integer(generator, 2, 6))]
        draw.line(points, fill=255, width=thickness, joint="curve")
        r = thickness / 2
        for x, y in (points[0], points[-1]):  # PIL's lines have square ends
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    return _as_tensor(canvas)


def whole_image(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    return torch.ones(height, width)


def no_mask(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    return torch.zeros(height, width)


MASK_KINDS: dict[str, Callable[[int, int, torch.Generator], torch.Tensor]] = {
    "box": boxes,
    "brush": brush_strokes,
    "full": whole_image,
    "none": no_mask,
}


def check_mask_kinds(probabilities: dict[str, float]) -> None:
    """ValueError naming the first bad entry of a {kind: weight} mapping."""
    for kind, weight in probabilities.items():
        if kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {kind!r}; expected some of {', '.join(MASK_KINDS)}")
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ValueError(f"mask kind {kind!r} has weight {weight!r}; expected a number >= 0")
    if sum(probabilities.values()) <= 0:
        raise ValueError("mask kind weights must not all be 0")


def draw_kinds(n: int, probabilities: dict[str, float], generator: torch.Generator) -> list[str]:
    """`n` kind names drawn with the given (relative) weights."""
    names = list(probabilities)
    weights = torch.tensor([float(probabilities[k]) for k in names])
    picks = torch.multinomial(weights, n, replacement=True, generator=generator)
    return [names[i] for i in picks.tolist()]


def random_masks(n: int, height: int, width: int, probabilities: dict[str, float], generator: torch.Generator) -> torch.Tensor:
    """(n, 1, height, width) float masks of 0 and 1 at pixel resolution, a random kind each."""
    kinds = draw_kinds(n, probabilities, generator)
    return torch.stack([MASK_KINDS[kind](height, width, generator) for kind in kinds])[:, None]  # (n, 1, H, W)
