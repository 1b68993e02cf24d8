"""Merge LoRAs into a model folder: a new folder whose weights include them."""

from __future__ import annotations

from pathlib import Path

from ldm.formats.model_folder import load_model, save_model
from ldm.lora.apply import apply_loras


def merge_lora_into_folder(source: str | Path, loras: list[tuple[str | Path, float]], target: str | Path) -> Path:
    components = load_model(source)
    apply_loras(components, loras)
    return save_model(components, target)
