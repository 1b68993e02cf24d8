"""The text side of a model: its text encoders, in order, and how their outputs become the
denoiser's Conditioning.

Stable Diffusion 1/2 (and our models) have one encoder: its hidden states are the tokens
the denoiser attends to, its pooled output the pooled vector. A family with several encoders
(SDXL: two CLIPs whose hidden states are concatenated along the width, the second's pooled
output the pooled vector) is another list and another `combine`, not new branches in the
pipeline and the training stages."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ldm.diffusion.conditioning import Conditioning
from ldm.models.prompt_embeddings import PromptEmbeddings
from ldm.models.text_encoder import TextEncoder, TextEncoding

Combine = Callable[[Sequence[TextEncoding]], Conditioning]


def one_encoder(encodings: Sequence[TextEncoding]) -> Conditioning:
    """One encoder's output as it is: tokens (B, L, D), pooled (B, P)."""
    if len(encodings) != 1:
        raise ValueError(f"this text side combines one text encoder's output, got {len(encodings)}")
    (encoding,) = encodings
    return Conditioning(encoding.hidden, pooled=encoding.pooled)


class TextConditioner:
    """Prompts -> Conditioning. Gradients flow as the caller's mode says (the LoRA stage
    trains text encoders through it; inference calls it under no_grad)."""

    def __init__(self, encoders: Sequence[TextEncoder], combine: Combine = one_encoder):
        self.encoders = list(encoders)
        self.combine = combine
        # A request's textual-inversion embeddings (its encoder reads their names as vectors); None: none.
        self.embeddings: Optional[PromptEmbeddings] = None

    def __call__(self, prompts: list[str], device: torch.device | str | None = None) -> Conditioning:
        return self.combine([self._encode(encoder, prompts, device) for encoder in self.encoders])

    def _encode(self, encoder: TextEncoder, prompts: list[str], device) -> TextEncoding:
        if self.embeddings is not None and self.embeddings.encoder is encoder:
            return self.embeddings(prompts, device)
        return encoder(encoder.tokenize(prompts).to(device))

    def truncation(self, text: str) -> Optional[tuple[int, int]]:
        """(tokens in `text`, tokens read) for the first encoder that cuts `text`, else None."""
        for encoder in self.encoders:
            count, room = encoder.count_tokens(text), encoder.max_tokens
            if count > room:
                return count, room
        return None
