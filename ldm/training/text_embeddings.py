"""Text embeddings of a frozen text encoder, remembered by caption: a caption seen before
costs no text-tower call. Captions repeat across epochs (and, in data like the scenes,
across images), so most training steps then run the denoiser alone.

Each new caption is encoded on its own, never in a batch with others: its embedding is then
the same whichever batch first brought it (a matmul's rounding can depend on the batch), so
a resumed run, whose memory starts empty, computes exactly what the uninterrupted one had.
Least recently used captions are forgotten beyond `max_bytes`."""

from __future__ import annotations

from collections import OrderedDict

import torch


class TextEmbeddingMemory:
    def __init__(self, encoder, max_bytes: int):
        self.encoder = encoder
        self.max_bytes = max_bytes
        self.embeddings: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    @torch.no_grad()
    def __call__(self, captions: list[str], device: torch.device) -> torch.Tensor:
        """(B, L, D) embeddings of `captions`, on `device`."""
        rows = []
        for caption in captions:
            embedding = self.embeddings.get(caption)
            if embedding is None:
                self.misses += 1
                embedding = self.encoder(self.encoder.tokenize([caption]).to(device))[0]  # (L, D)
                self._remember(caption, embedding)
            else:
                self.hits += 1
                self.embeddings.move_to_end(caption)
            rows.append(embedding)
        return torch.stack(rows)

    def _remember(self, caption: str, embedding: torch.Tensor) -> None:
        size = embedding.numel() * embedding.element_size()
        if size > self.max_bytes:
            return
        self.embeddings[caption] = embedding
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, dropped = self.embeddings.popitem(last=False)
            self.bytes -= dropped.numel() * dropped.element_size()
