"""A grid of samples: one row per prompt, its text written above the row."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from ldm.scenes.model_evaluation import PromptImages

LABEL_HEIGHT = 14
GAP = 2
MIN_WIDTH = 320  # room for the prompt text when the images are small


def pick_rows(results: Sequence[PromptImages], seen: int = 3, heldout: int = 3) -> list[PromptImages]:
    """A few prompts of each kind, spread over the list (which goes pair by pair)."""
    rows = []
    for split, count in (("seen", seen), ("heldout", heldout)):
        group = [r for r in results if r.prompt.split == split]
        if group and count:
            step = max(1, len(group) // count)
            rows += group[::step][:count]
    return rows


def sample_grid(rows: Sequence[PromptImages], columns: int = 8) -> Image.Image:
    """Up to `columns` images per row; a held-out prompt's label is marked '[held-out]'."""
    if not rows:
        raise ValueError("no rows to draw")
    size = rows[0].images[0].width
    width = max(MIN_WIDTH, min(columns, max(len(r.images) for r in rows)) * (size + GAP) - GAP)
    height = len(rows) * (LABEL_HEIGHT + size + GAP)
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        top = r * (LABEL_HEIGHT + size + GAP)
        mark = " [held-out]" if row.prompt.split == "heldout" else ""
        draw.text((2, top + 1), row.prompt.text + mark, fill="black")
        for c, image in enumerate(row.images[:columns]):
            grid.paste(image, (c * (size + GAP), top + LABEL_HEIGHT))
    return grid
