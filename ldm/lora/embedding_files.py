"""Textual-inversion embedding files in the formats AUTOMATIC1111 reads:

    NAME.pt / NAME.bin     {"string_to_param": {"*": (n, width)}, "name", "step", "sd_checkpoint",
                           "sd_checkpoint_name", ...}  (A1111's own training), or {token: (width,)}
                           (diffusers' learned_embeds.bin); read with torch's weights-only
                           unpickler: a file that would run code is refused, never opened further
    NAME.safetensors       {"emb_params": (n, width)} (kohya), or any one tensor
    SDXL files             {"clip_l": (n, 768), "clip_g": (n, 1280)}: vectors for two text encoders

The prompt word is the file's name (NAME), as in A1111.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ldm.models.weights import ModelError, read_safetensors, read_tensor_pickle

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
# Far above any embedding (75 vectors of SDXL's 2048 in float32 are 0.6 MB): a larger file is a
# model or a LoRA in the wrong folder, refused before it is read.
MAX_EMBEDDING_BYTES = 16 * 2**20
SDXL_PARTS = ("clip_l", "clip_g")
ONE_ENCODER = ""  # the key of `tensors` for a file made for one text encoder


class EmbeddingFileError(ModelError):
    """An embedding file that cannot be read or used; the message names it and says why."""


@dataclass(frozen=True)
class EmbeddingFile:
    name: str  # the word prompts use: the file's name without its suffix
    path: Path
    tensors: dict[str, torch.Tensor]  # text encoder ("" for a one-encoder file, else clip_l/clip_g) -> (n, width)
    step: Optional[int] = None
    sd_checkpoint: Optional[str] = None
    sd_checkpoint_name: Optional[str] = None
    hash: str = field(default="", compare=False)  # filled in when the PNG needs it

    @property
    def vectors(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    @property
    def shape(self) -> int:
        """A1111's `shape`: the width of a vector (both encoders' together for SDXL)."""
        return sum(tensor.shape[1] for tensor in self.tensors.values())

    @property
    def for_two_encoders(self) -> bool:
        return ONE_ENCODER not in self.tensors


def read_embedding_file(path: str | Path) -> EmbeddingFile:
    """One embedding file; EmbeddingFileError (one line, naming it) when it is not one."""
    path = Path(path)
    if path.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise EmbeddingFileError(f"{path}: not an embedding file (expected {', '.join(EMBEDDING_SUFFIXES)})")
    if path.stat().st_size > MAX_EMBEDDING_BYTES:
        raise EmbeddingFileError(f"{path}: {path.stat().st_size / 2**20:.0f} MiB is too large for an embedding (a model or a LoRA?)")
    try:
        data = read_safetensors(path) if path.suffix.lower() == ".safetensors" else read_tensor_pickle(path)
    except ModelError as error:
        raise EmbeddingFileError(str(error)) from None
    if not isinstance(data, dict):
        raise EmbeddingFileError(f"{path}: holds a {type(data).__name__}, not an embedding")
    tensors = {part: _rows(tensor, path) for part, tensor in _layout(data, path).items()}
    if len({tensor.shape[0] for tensor in tensors.values()}) != 1:
        raise EmbeddingFileError(f"{path}: its clip_l and clip_g parts hold different numbers of vectors")
    return EmbeddingFile(
        path.stem, path, tensors, _plain(data.get("step"), int), _plain(data.get("sd_checkpoint"), str),
        _plain(data.get("sd_checkpoint_name"), str),
    )  # fmt: skip


def _layout(data: dict, path: Path) -> dict[str, torch.Tensor]:
    if "string_to_param" in data:  # A1111's training: one term, "*"
        terms = data["string_to_param"]
        if not isinstance(terms, dict) or len(terms) != 1:
            raise EmbeddingFileError(f"{path}: string_to_param must hold one term, it holds {len(terms) if isinstance(terms, dict) else terms!r}")
        return {ONE_ENCODER: next(iter(terms.values()))}
    if all(part in data for part in SDXL_PARTS):
        return {part: data[part] for part in SDXL_PARTS}
    tensors = [value for value in data.values() if isinstance(value, torch.Tensor)]
    if len(tensors) != 1:
        raise EmbeddingFileError(
            f"{path}: holds {len(tensors)} tensors; an embedding file holds string_to_param, emb_params or one tensor"
        )
    return {ONE_ENCODER: tensors[0]}


def _rows(tensor, path: Path) -> torch.Tensor:
    """(n, width) float vectors; one vector (width,) as (1, width)."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise EmbeddingFileError(f"{path}: the embedding is not a tensor of numbers")
    rows = tensor.detach().float()
    rows = rows.unsqueeze(0) if rows.dim() == 1 else rows
    if rows.dim() != 2 or rows.shape[0] == 0:
        raise EmbeddingFileError(f"{path}: the embedding has shape {tuple(tensor.shape)}, not (vectors, width)")
    if not torch.isfinite(rows).all():
        raise EmbeddingFileError(f"{path}: the embedding holds NaN or infinite values; the file is damaged")
    return rows


def _plain(value, kind):
    """A metadata value shown by the API as it is, when it is of `kind` (else None)."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None
