"""The text side of a model: its text encoders, in order, and how their outputs become the
denoiser's Conditioning.

Stable Diffusion 1/2 (and our models) have one encoder: its hidden states are the tokens
the denoiser attends to, its pooled output the pooled vector. A family with several encoders
(SDXL: two CLIPs whose hidden states are concatenated along the width, the second's pooled
output the pooled vector) is another list and another `combine`, not new branches in the
pipeline and the training stages.

Prompts come in two ways: as plain text (`__call__`: the tokenizer's own reading, cut after
75 tokens; training captions), or parsed into weighted fragments (`weighted`: A1111's way,
ldm.prompts): 75-token chunks, each encoded between its own start and end marks and their
contexts concatenated, every token's hidden state scaled by its weight and then the chunk's
mean restored (A1111's original emphasis); the pooled vector is the first chunk's."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ldm.diffusion.conditioning import Conditioning
from ldm.models.prompt_embeddings import PromptEmbeddings
from ldm.models.text_encoder import TextEncoder, TextEncoding
from ldm.prompts.chunks import Chunk, chunk_prompt, joined
from ldm.prompts.syntax import Fragment

Segments = Sequence[Sequence[Fragment]]  # a parsed prompt: BREAK-separated runs of weighted text

Combine = Callable[[Sequence[TextEncoding]], Conditioning]


def one_encoder(encodings: Sequence[TextEncoding]) -> Conditioning:
    """One encoder's output as it is: tokens (B, L, D), pooled (B, P)."""
    if len(encodings) != 1:
        raise ValueError(f"this text side combines one text encoder's output, got {len(encodings)}")
    (encoding,) = encodings
    return Conditioning(encoding.hidden, pooled=encoding.pooled)


def concatenated(encodings: Sequence[TextEncoding]) -> Conditioning:
    """SDXL's text side: the encoders' hidden states side by side along the width (768 + 1280
    = 2048), the last encoder's pooled (projected) output the pooled vector."""
    tokens = torch.cat([encoding.hidden for encoding in encodings], dim=-1)  # (B, L, sum of widths)
    return Conditioning(tokens, pooled=encodings[-1].pooled)


class TextConditioner:
    """Prompts -> Conditioning. Gradients flow as the caller's mode says (the LoRA stage
    trains text encoders through it; inference calls it under no_grad)."""

    def __init__(self, encoders: Sequence[TextEncoder], combine: Combine = one_encoder, zeros_for_empty_negative: bool = False):
        self.encoders = list(encoders)
        self.combine = combine
        # An empty negative prompt conditions as zeros, not as the encoding of "" (SDXL's
        # force_zeros_for_empty_prompt; A1111 does the same for SDXL).
        self.zeros_for_empty_negative = zeros_for_empty_negative
        # A request's textual-inversion embeddings (its encoder reads their names as vectors); None: none.
        self.embeddings: Optional[PromptEmbeddings] = None

    def __call__(self, prompts: list[str], device: torch.device | str | None = None) -> Conditioning:
        return self.combine([self._encode(encoder, prompts, device) for encoder in self.encoders])

    def _encode(self, encoder: TextEncoder, prompts: list[str], device) -> TextEncoding:
        if self.embeddings is not None and self.embeddings.encoder is encoder:
            return self.embeddings(prompts, device)
        return encoder(encoder.tokenize(prompts).to(device))

    def weighted(self, prompts: Sequence[Segments], device: torch.device | str | None = None) -> Conditioning:
        """Parsed prompts -> Conditioning with tokens (B, L * chunks, D): every prompt has as
        many chunks as the longest (empty chunks after the shorter ones, as A1111 pads them);
        a chunk's weights are applied against the mean of that chunk over the whole batch, as
        A1111 applies them to the batch it encodes (one prompt's texts over the steps)."""
        return self.combine([encode_chunked(encoder, prompts, device, self._embeddings_of(encoder)) for encoder in self.encoders])

    def _embeddings_of(self, encoder: TextEncoder) -> Optional[PromptEmbeddings]:
        return self.embeddings if self.embeddings is not None and self.embeddings.encoder is encoder else None

    def truncation(self, text: str) -> Optional[tuple[int, int]]:
        """(tokens in `text`, tokens read) for the first encoder that cuts `text`, else None."""
        for encoder in self.encoders:
            count, room = encoder.count_tokens(text), encoder.max_tokens
            if count > room:
                return count, room
        return None


def encode_chunked(
    encoder: TextEncoder, prompts: Sequence[Segments], device=None, embeddings: Optional[PromptEmbeddings] = None
) -> TextEncoding:
    """One encoder's chunked, weighted encoding of parsed prompts: hidden (B, L * chunks, width).
    `embeddings`: the request's textual-inversion names, read as their vectors (one token each,
    all of a name's in one chunk)."""

    def word_tokens(text: str) -> list[int | tuple[int, ...]]:
        ids = encoder.word_tokens(text)
        return ids if embeddings is None else embeddings.splice_units(ids)

    comma = encoder.word_tokens(",")
    split = [chunk_prompt(p, word_tokens, comma[0] if len(comma) == 1 else None, encoder.max_tokens) for p in prompts]
    if getattr(encoder, "one_chunk", False):  # SD3's T5: the whole prompt in its one long sequence
        split = [[joined(chunks, encoder.max_tokens)] for chunks in split]
    hidden, pooled = [], None
    for k in range(max(len(chunks) for chunks in split)):
        batch = [chunks[k] if k < len(chunks) else Chunk() for chunks in split]
        tokens = encoder.frame([chunk.tokens for chunk in batch]).to(device)
        if embeddings is None:
            out = encoder(tokens)
        else:
            with embeddings.placed(tokens) as safe:
                out = encoder(safe)
        marks = getattr(encoder, "leading_marks", 1)  # start marks before a chunk's tokens (T5 has none)
        hidden.append(emphasized(out.hidden, token_weights(batch, out.hidden.shape[1], marks)))  # (B, L, width)
        pooled = out.pooled if pooled is None else pooled  # the first chunk's, as A1111
    return TextEncoding(torch.cat(hidden, dim=1), pooled)  # (B, L * chunks, width), (B, P)


def token_weights(chunks: Sequence[Chunk], length: int, marks: int = 1) -> torch.Tensor:
    """(B, length) weights of framed chunks whose tokens follow `marks` start marks: 1 for the
    marks, the end mark and padding."""
    weights = torch.ones(len(chunks), length)
    for row, chunk in zip(weights, chunks):
        row[marks : marks + len(chunk.weights)] = torch.tensor(chunk.weights)
    return weights


def emphasized(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, L, D) scaled by their tokens' weights (B, L), then rescaled so that
    the mean over the whole tensor is what it was (A1111's EmphasisOriginal). Unweighted
    prompts come back as they are. Where the mean is next to nothing (an untrained encoder's
    layer norm centres every token: A1111's ratio would be noise over noise), the scaled
    states are not rescaled; trained CLIPs' means are far from it."""
    if bool((weights == 1).all()):
        return hidden
    original = hidden.float()
    scaled = original * weights.to(hidden.device)[..., None]  # (B, L, D)
    if scaled.mean().abs() <= 1e-4 * scaled.std() or original.mean().abs() <= 1e-4 * original.std():
        return scaled.to(hidden.dtype)
    return (scaled * (original.mean() / scaled.mean())).to(hidden.dtype)
