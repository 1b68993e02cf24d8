"""GET /sdapi/v1/embeddings: the textual-inversion embeddings prompts can use, in AUTOMATIC1111's
shape: {"loaded": {name: {step, sd_checkpoint, sd_checkpoint_name, shape, vectors}}, "skipped":
{...}}; `shape` is a vector's width, `vectors` how many a name stands for. A file that could not
be read at all is listed as skipped with no shape and no vectors."""

from __future__ import annotations

from typing import Optional

from ldm.lora.embedding_files import EmbeddingFile
from ldm.lora.embeddings import catalog
from ldm.models.components import Components

UNREAD = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": None, "vectors": 0}


def embedding_list(folder: Optional[str], components: Components) -> dict:
    found = catalog(folder, components)
    return {
        "loaded": {name: _entry(each) for name, each in found.loaded.items()},
        "skipped": {name: _entry(each) if each is not None else dict(UNREAD) for name, (each, _) in found.skipped.items()},
    }


def _entry(embedding: EmbeddingFile) -> dict:
    return {
        "step": embedding.step,
        "sd_checkpoint": embedding.sd_checkpoint,
        "sd_checkpoint_name": embedding.sd_checkpoint_name,
        "shape": embedding.shape,
        "vectors": embedding.vectors,
    }
