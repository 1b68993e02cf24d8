"""The LoRA files a prompt's <lora:NAME:WEIGHT> tags can name: GET /sdapi/v1/loras lists them
as AUTOMATIC1111 does (name, alias, path, the file's metadata; read from the headers only), and
a request's tags are checked against them in the API's terms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ldm.lora.refs import prompt_lora_tags, resolve_lora_name
from ldm.settings import GenerationError


def check_prompt_loras(prompt: str, lora_dir: Optional[str]) -> None:
    """GenerationError naming the first bad <lora:NAME:WEIGHT> tag of `prompt`: a weight that is
    not a number within ldm.lora.refs' bounds, or a NAME this server does not have. The messages
    speak of the API (the prompt, /sdapi/v1/loras), never of the server's folders."""
    try:
        tags = prompt_lora_tags(prompt)
    except ValueError as error:
        raise GenerationError(f"prompt: {error}") from None
    for name, _ in tags:
        try:
            resolve_lora_name(name, lora_dir)
        except ValueError:
            where = "GET /sdapi/v1/loras lists them" if lora_dir else "it has no LoRA folder (ldm-serve --lora-dir)"
            raise GenerationError(f"prompt: <lora:{name}>: this server has no LoRA named {name!r}; {where}") from None


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
