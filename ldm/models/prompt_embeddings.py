"""Words of a prompt read as learned vectors (textual-inversion embeddings), as AUTOMATIC1111 does.

An embedding's name is found in a prompt by its token ids (so case does not matter: CLIP's
tokenizers lower-case), the longest name first where two start alike; its tokens are replaced
by as many places as the embedding has vectors, and the vectors are written over the token
embedding table's output at those places. A name that is also a word means the embedding
wherever the word stands alone ("cat" in "a cat", not in "cats": another token).

The places are ids past the end of the table (its size + k, k the vector's row here): they
pass through any code that handles id lists (chunking, padding) and count as one token each.
`placed` swaps them for id 0 before the encoder runs (below the end mark, so CLIP's argmax
pooling still finds the end mark) while a forward hook on the table puts the vectors there.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch

from ldm.models.text_encoder import TextEncoder, TextEncoding


class NameFinder:
    """Where `names` stand in a prompt, by their token ids in `encoder`'s tokenizer."""

    def __init__(self, encoder: TextEncoder, names):
        self.encoder = encoder
        self.names: dict[tuple[int, ...], str] = {}
        for name in names:
            ids = tuple(encoder.word_tokens(name))
            if ids and ids not in self.names:  # not a name the tokenizer reads as nothing, or as another's tokens
                self.names[ids] = name
        # first id -> the names starting with it, the longest first (A1111's precedence)
        self._by_first: dict[int, list[tuple[int, ...]]] = {}
        for ids in sorted(self.names, key=len, reverse=True):
            self._by_first.setdefault(ids[0], []).append(ids)

    def match(self, ids: list[int], at: int) -> Optional[tuple[int, ...]]:
        """The ids of the name standing at `at` in `ids`, if one does."""
        for name_ids in self._by_first.get(ids[at], ()):
            if tuple(ids[at : at + len(name_ids)]) == name_ids:
                return name_ids
        return None

    def used_in(self, text: str) -> list[str]:
        """The names `text` uses, in the order they first appear."""
        ids, found, at = self.encoder.word_tokens(text), {}, 0
        while at < len(ids):
            name_ids = self.match(ids, at)
            if name_ids is not None:
                found.setdefault(self.names[name_ids], None)
            at += len(name_ids) if name_ids else 1
        return list(found)


class PromptEmbeddings:
    """`vectors`: name -> (n, width) rows for `encoder` (width = its token embedding's)."""

    def __init__(self, encoder: TextEncoder, vectors: dict[str, torch.Tensor]):
        self.encoder = encoder
        self.finder = NameFinder(encoder, vectors)
        self.first_place = encoder.token_embedding.num_embeddings
        self._places: dict[tuple[int, ...], list[int]] = {}
        rows: list[torch.Tensor] = []
        for name_ids, name in self.finder.names.items():
            start = self.first_place + sum(len(each) for each in rows)
            self._places[name_ids] = list(range(start, start + len(vectors[name])))
            rows.append(vectors[name].detach().float())
        width = encoder.token_embedding.weight.shape[1]
        self.rows = torch.cat(rows) if rows else torch.zeros(0, width)  # (places, width)

    def splice(self, ids: list[int]) -> list[int]:
        """A prompt's token ids (no start or end mark) with each name's tokens replaced by its places."""
        return [place for unit in self.splice_units(ids) for place in (unit if isinstance(unit, tuple) else (unit,))]

    def splice_units(self, ids: list[int]) -> list[int | tuple[int, ...]]:
        """As splice, each name's places as one tuple (a chunked prompt keeps them in one chunk)."""
        out: list[int | tuple[int, ...]] = []
        at = 0
        while at < len(ids):
            name_ids = self.finder.match(ids, at)
            if name_ids is None:
                out.append(ids[at])
                at += 1
            else:
                out.append(tuple(self._places[name_ids]))
                at += len(name_ids)
        return out

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """As the encoder's own tokenize (start mark, ids cut to fit, end mark, padding), names spliced."""
        empty = self.encoder.tokenize([""])[0].tolist()  # [start, end, pad, ...]: the encoder's marks
        length, start, end = len(empty), empty[0], empty[1]
        pad = empty[2] if length > 2 else end
        rows = []
        for prompt in prompts:
            ids = self.splice(self.encoder.word_tokens(prompt))[: length - 2]
            rows.append([start, *ids, end] + [pad] * (length - 2 - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    @contextmanager
    def placed(self, tokens: torch.Tensor) -> Iterator[torch.Tensor]:
        """`tokens` (B, L) with places swapped for id 0; while the block runs, the encoder's
        token embedding table returns the vectors at those places."""
        is_place = tokens >= self.first_place
        if not bool(is_place.any()):
            yield tokens
            return
        index = (tokens - self.first_place).clamp(min=0)

        def put_vectors(module, inputs, output):
            if inputs[0].shape != tokens.shape:
                return output  # another call of the table (not this prompt batch)
            vectors = self.rows.to(device=output.device, dtype=output.dtype)[index.to(output.device)]
            return torch.where(is_place.to(output.device).unsqueeze(-1), vectors, output)

        handle = self.encoder.token_embedding.register_forward_hook(put_vectors)
        try:
            yield tokens.masked_fill(is_place, 0)
        finally:
            handle.remove()

    def __call__(self, prompts: list[str], device: torch.device | str | None = None) -> TextEncoding:
        tokens = self.tokenize(prompts).to(device)
        with self.placed(tokens) as safe:
            return self.encoder(safe)
