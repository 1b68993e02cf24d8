"""AUTOMATIC1111's refiner fields: `refiner_checkpoint` names one of the server's models (its
title in /sdapi/v1/sd-models) that is an SDXL refiner, `refiner_switch_at` where it takes over.
As in A1111, "" or "None" means no refiner, and the switch is ignored without one."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ldm.formats.diffusers_sdxl import is_sdxl_refiner_folder
from ldm.settings import GenerationError

NO_REFINER = ("", "None")  # what A1111's clients send when no refiner is chosen


def refiner_fields(body: dict, given: dict, models: Optional[dict[str, Path]]) -> None:
    """`given` (settings by name) with the request's refiner as its folder, or without refiner
    settings; GenerationError in one line for a name that is not a listed refiner."""
    name = body.get("refiner_checkpoint")
    if name is None or name in NO_REFINER:
        given.pop("refiner_switch", None)
        return
    path = refiner_path(str(name), models or {})
    given["refiner"] = str(path)


def refiner_path(name: str, models: dict[str, Path]) -> Path:
    """The folder of the model titled `name` (an A1111 title's " [hash]" tail may follow), checked to be a refiner."""
    path = models.get(name) or models.get(name.split(" [")[0])
    if path is None:
        raise GenerationError(f"unknown refiner_checkpoint {name!r}; known models: {', '.join(models) or 'none'}")
    if not is_sdxl_refiner_folder(path):
        raise GenerationError(f"refiner_checkpoint {name!r} is not an SDXL refiner (a diffusers folder with text_encoder_2/ and no text_encoder/)")
    return path
