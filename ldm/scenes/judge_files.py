"""The file of a judge network (attribute classifier, layout segmenter): its weights in one
safetensors file whose metadata names the format, carries the config (JSON) and a record of
how it was trained and scored. Written whole or not at all; read without pickles."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ldm.files import writing_file
from ldm.models.weights import ModelError, read_safetensors


def save_judge(model: torch.nn.Module, path: str | Path, file_format: str, config_json: str, record: dict | None) -> None:
    from safetensors.torch import save_file

    metadata = {"format": file_format, "config": config_json, "record": json.dumps(record or {})}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with writing_file(path) as temp:
        save_file(state, str(temp), metadata=metadata)


def read_judge(path: str | Path, file_format: str, what: str) -> tuple[dict[str, torch.Tensor], str, dict]:
    """(weights, config JSON, record) of a judge file; ModelError with a one-line reason."""
    from safetensors import safe_open

    path = Path(path)
    state = read_safetensors(path)  # refuses pickles, explains a missing or broken file
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != file_format:
        raise ModelError(f"{path} is not {what} (metadata format {metadata.get('format')!r})")
    return state, metadata["config"], json.loads(metadata.get("record", "{}"))
