"""GET /sdapi/v1/loras: the LoRA files a prompt's <lora:NAME:WEIGHT> tags can name, as
AUTOMATIC1111 lists them (name, alias, path, the file's metadata); read from the headers only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional


def lora_list(lora_dir: Optional[str]) -> list[dict]:
    """The files a tag can name: those that resolve inside the folder (a link out is not listed)."""
    if lora_dir is None:
        return []
    folder = Path(lora_dir).resolve()
    files = [path for path in sorted(Path(lora_dir).glob("*.safetensors")) if path.resolve().is_relative_to(folder)]
    return [_entry(path) for path in files]


def _entry(path: Path) -> dict:
    return {"name": path.stem, "alias": path.stem, "path": str(path), "metadata": _metadata(path)}


def _metadata(path: Path) -> dict:
    """The file's metadata, JSON strings opened (kohya stores nested values as JSON); {} when unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}
    return {key: _opened(value) for key, value in metadata.items()}


def _opened(value: str):
    if value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value
