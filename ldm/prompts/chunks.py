"""A weighted prompt -> chunks of at most 75 tokens, each with its tokens' weights, as A1111
cuts a long prompt (its text encoder reads 75 tokens between the start and end marks).

A chunk ends when it is full, and at every BREAK. When a chunk fills up within 20 tokens
after a comma (A1111's "prompt word wrap length limit", default 20), the tokens after the
comma move on to the next chunk, so a phrase is not cut in two. A textual-inversion
embedding's vectors (a tuple from `word_tokens`) stay in one chunk: one that does not fit
in what is left of a chunk starts the next, as A1111 keeps them. A prompt with no tokens is
one empty chunk."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

from ldm.prompts.syntax import Fragment

CHUNK_TOKENS = 75
COMMA_BACKTRACK = 20

# A token id, or the ids of an embedding's vectors, which stay together.
Unit = Union[int, tuple[int, ...]]


@dataclass
class Chunk:
    """Token ids without start and end marks, and one weight per token."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


def chunk_prompt(
    segments: Sequence[Sequence[Fragment]],
    word_tokens: Callable[[str], Sequence[Unit]],
    comma: Optional[int] = None,
    size: int = CHUNK_TOKENS,
    backtrack: int = COMMA_BACKTRACK,
) -> list[Chunk]:
    """The chunks of a prompt's BREAK-separated `segments`; `word_tokens` gives a fragment's
    token ids (and embeddings' tuples), `comma` is the comma's id (None: no moving at commas)."""
    chunks: list[Chunk] = []
    chunk = Chunk()
    last_comma = -1  # index in `chunk` of its last comma

    def close() -> None:
        nonlocal chunk, last_comma
        chunks.append(chunk)
        chunk, last_comma = Chunk(), -1

    for k, segment in enumerate(segments):
        if k > 0:
            close()  # BREAK
        for text, weight in segment:
            for unit in word_tokens(text):
                if isinstance(unit, tuple):  # an embedding: whole in this chunk, else in the next
                    if chunk.tokens and len(chunk.tokens) + len(unit) > size:
                        close()
                    for token in unit:
                        if len(chunk.tokens) == size:  # longer than a whole chunk: cut, as nothing else can
                            close()
                        chunk.tokens.append(token)
                        chunk.weights.append(weight)
                    continue
                token = unit
                if token == comma:
                    last_comma = len(chunk.tokens)
                elif len(chunk.tokens) == size and last_comma != -1 and size - last_comma <= backtrack:
                    cut = last_comma + 1
                    moved = Chunk(chunk.tokens[cut:], chunk.weights[cut:])
                    del chunk.tokens[cut:], chunk.weights[cut:]
                    close()
                    chunk = moved
                if len(chunk.tokens) == size:
                    close()
                chunk.tokens.append(token)
                chunk.weights.append(weight)
    if chunk.tokens or not chunks:
        close()
    return chunks


def joined(chunks: Sequence[Chunk], size: int) -> Chunk:
    """A prompt's chunks as one, cut after `size` tokens: how an encoder that reads one long
    sequence (SD3's T5, as diffusers and A1111 read it) takes a prompt, BREAKs dropped."""
    tokens = [token for chunk in chunks for token in chunk.tokens]
    weights = [weight for chunk in chunks for weight in chunk.weights]
    return Chunk(tokens[:size], weights[:size])
