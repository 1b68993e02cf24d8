"""The hires fix's arithmetic, as AUTOMATIC1111 has it: the upscalers' names, the size the
first picture is upscaled to (and cropped to, for a resize of another aspect ratio) and the
second pass's schedule. Torch-free: the settings check sizes with it before anything loads;
ldm.pipeline.hires draws with it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

DEFAULT_HIRES_STRENGTH = 0.7  # AUTOMATIC1111's hires fix slider (its API's default is 0.75)
MAX_HIRES_SCALE = 16.0  # sizes are checked against the limits anyway; this keeps the arithmetic sane

# The upscalers by AUTOMATIC1111's names (what the PNG records); the command line takes them
# lower-case with hyphens too (latent-bicubic). What each does: ldm.pipeline.upscalers. Any
# other name is an upscaler model's (a built-in name or a folder; ldm.settings checks it).
HIRES_UPSCALERS = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
    "Lanczos",
    "Nearest",
    "None",  # A1111's "no upscaler model": a plain Lanczos resize of the pixels
)
DEFAULT_HIRES_UPSCALER = "Latent"


def works_on_latents(name: str) -> bool:
    """Whether the upscaler `name` (A1111's) interpolates latents, rather than decoding to pixels."""
    return name.startswith("Latent")


def short_upscaler_name(name: str) -> str:
    """"Latent (bicubic antialiased)" -> "latent-bicubic-antialiased": a name a shell takes unquoted."""
    return name.lower().replace(" (", "-").replace(")", "").replace(" ", "-")


def hires_upscaler_name(text: str) -> str:
    """AUTOMATIC1111's name of the upscaler `text` names (either spelling, any case); any other
    text as it is: an upscaler model's name or folder (ldm.settings.check_hires_upscaler)."""
    for name in HIRES_UPSCALERS:
        if text.lower() in (name.lower(), short_upscaler_name(name)):
            return name
    return text


def is_model_upscaler(name: str) -> bool:
    """Whether the hires upscaler `name` is a diffusion upscaler model rather than a resize."""
    return hires_upscaler_name(name) not in HIRES_UPSCALERS


def upscaler_folder_problem(path: Path) -> Optional[str]:
    """Why the model folder `path` is not an upscaler (None: it is one), read without torch:
    our model.yaml with an `upscaler` section, or a diffusers StableDiffusionUpscalePipeline folder."""
    try:
        if (path / "model.yaml").is_file():
            model = (yaml.safe_load((path / "model.yaml").read_text()) or {}).get("model") or {}
            return None if model.get("upscaler") else f"{path} is not an upscaler (its model.yaml has no upscaler section)"
        if (path / "model_index.json").is_file():
            pipeline = json.loads((path / "model_index.json").read_text()).get("_class_name")
            return None if pipeline == "StableDiffusionUpscalePipeline" else f"{path} is not an upscaler (its model_index.json names {pipeline})"
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as error:
        return f"{path} cannot be read as a model folder ({type(error).__name__})"
    return f"{path} is not a model folder (no model.yaml or model_index.json)"


def parse_resize(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' in pixels; 0 for one side keeps the aspect ratio."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"must be WIDTHxHEIGHT in pixels (0 for one side: from the aspect ratio), got {text!r}") from None
    return width, height


def check_hires_values(scale, resize, strength, steps, max_steps: int) -> None:
    """ValueError naming the first hires setting out of range (None: not given); the upscaler:
    ldm.settings.check_hires_upscaler."""
    if scale is not None and not 1.0 <= scale <= MAX_HIRES_SCALE:  # NaN fails this too
        raise ValueError(f"hires scale must be between 1 and {MAX_HIRES_SCALE:g}, got {scale:g}")
    if resize is not None and (len(resize) != 2 or min(resize) < 0 or max(resize) == 0):
        raise ValueError(f"hires resize must be a width and a height >= 0, not both 0, got {resize}")
    if strength is not None and not 0.0 <= strength <= 1.0:
        raise ValueError(f"hires strength must be between 0 and 1, got {strength:g}")
    if steps is not None and not 0 <= steps <= max_steps:
        raise ValueError(f"hires steps must be between 0 (the first pass's) and {max_steps}, got {steps}")


@dataclass(frozen=True)
class HiresPass:
    """The second pass's choices, defaults applied."""

    steps: int  # that run
    strength: float
    upscaler: str  # A1111's name

    def schedule(self) -> tuple[int, float]:
        return hires_schedule(self.steps, self.strength)


@dataclass(frozen=True)
class HiresSize:
    """Where the hires fix draws: the first picture is upscaled to `upscaled`, and the middle
    `size` of that is repainted (smaller only when a resize has another aspect ratio)."""

    upscaled: tuple[int, int]  # (width, height)
    size: tuple[int, int]  # (width, height) of the results

    def crop(self, multiple: int) -> tuple[int, int]:
        """(left, top) of `size` in `upscaled`, in `multiple`s: the overflow's smaller half
        (A1111 crops its latents so)."""
        return tuple((whole - kept) // multiple // 2 for whole, kept in zip(self.upscaled, self.size))  # type: ignore[return-value]


def hires_size(width: int, height: int, scale: Optional[float], resize: Optional[tuple[int, int]], multiple: int = 8) -> HiresSize:
    """AUTOMATIC1111's hires target for a first pass of `width` x `height`: by `scale`, or to
    `resize` (which wins; covered, the overflow cropped), floored to whole `multiple`s (latent cells)."""
    target = None
    if resize is None:
        wanted = int(width * scale), int(height * scale)
    elif resize[1] == 0 or (resize[0] and width * resize[1] < resize[0] * height):  # relatively wider
        wanted, target = (resize[0], resize[0] * height // width), resize if resize[1] else None
    else:
        wanted, target = (resize[1] * width // height, resize[1]), resize if resize[0] else None
    cells = wanted[0] // multiple, wanted[1] // multiple
    crop = ((wanted[0] - target[0]) // multiple, (wanted[1] - target[1]) // multiple) if target else (0, 0)
    return HiresSize((cells[0] * multiple, cells[1] * multiple), ((cells[0] - crop[0]) * multiple, (cells[1] - crop[1]) * multiple))


def hires_schedule(steps: int, strength: float) -> tuple[int, float]:
    """The second pass as AUTOMATIC1111 runs it: exactly `steps` steps whatever the strength,
    the last ones of a schedule stretched to steps / strength. Returns (the schedule's steps,
    the share of them that runs) for a sampling run that keeps int(schedule * share) steps.
    Strength 0 runs none (the upscaled picture comes back); 1 starts from pure noise."""
    if strength <= 0.0 or strength >= 1.0:
        return steps, min(max(strength, 0.0), 1.0)
    # At least one step more than run, so that the run starts from the upscaled picture noised
    # (A1111 starts at its schedule's top then, noise all but drowning the picture).
    schedule = max(int(steps / min(strength, 0.999)), steps + 1)
    return schedule, (steps + 0.5) / schedule  # the half: int() then keeps `steps` exactly
