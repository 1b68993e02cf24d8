"""The conditioning of a frozen text side, remembered by caption: a caption seen before
costs no text-tower call. Captions repeat across epochs (and, in data like the scenes,
across images), so most training steps then run the denoiser alone.

Each new caption is encoded on its own, never in a batch with others: its embedding is then
the same whichever batch first brought it (a matmul's rounding can depend on the batch), so
a resumed run, whose memory starts empty, computes exactly what the uninterrupted one had.
Least recently used captions are forgotten beyond `max_bytes`."""

from __future__ import annotations

from collections import OrderedDict

import torch

from ldm.diffusion.conditioning import Conditioning, cat_conditions
from ldm.models.text_conditioner import TextConditioner


class TextEmbeddingMemory:
    def __init__(self, conditioner: TextConditioner, max_bytes: int):
        self.conditioner = conditioner
        self.max_bytes = max_bytes
        self.embeddings: OrderedDict[str, Conditioning] = OrderedDict()  # caption -> its conditioning (batch of 1)
        self.bytes = 0
        self.hits = self.misses = 0

    @torch.no_grad()
    def __call__(self, captions: list[str], device: torch.device) -> Conditioning:
        """The conditioning of `captions` (tokens (B, L, D), ...), on `device`."""
        rows = []
        for caption in captions:
            embedding = self.embeddings.get(caption)
            if embedding is None:
                self.misses += 1
                embedding = self.conditioner([caption], device)
                self._remember(caption, embedding)
            else:
                self.hits += 1
                self.embeddings.move_to_end(caption)
            rows.append(embedding)
        return cat_conditions(rows)

    def _remember(self, caption: str, embedding: Conditioning) -> None:
        size = size_in_bytes(embedding)
        if size > self.max_bytes:
            return
        self.embeddings[caption] = embedding
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self.embeddings.popitem(last=False)
            self.bytes -= size_in_bytes(dropped)


def size_in_bytes(cond: Conditioning) -> int:
    tensors = [cond.tokens, cond.mask, cond.pooled, cond.concat, *cond.vectors.values()]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
