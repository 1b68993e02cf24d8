"""transformers' T5EncoderModel + its tokenizer as a TextEncoder (SD3's third encoder): the last
hidden state of a fixed number of tokens (diffusers' max_sequence_length, 256 for SD3), the
prompt's tokens then T5's end mark then padding; no start mark and no pooled output."""

from __future__ import annotations

import torch
from torch import nn

from ldm.models.text_encoder import TextEncoding


class HFT5TextEncoder(nn.Module):
    leading_marks = 0  # no start mark before the prompt's tokens (CLIP has one)
    one_chunk = True  # a long prompt is cut at `tokens`, BREAKs dropped, not chunked (ldm.models.text_conditioner)

    def __init__(self, model, tokenizer, tokens: int):
        super().__init__()
        self.tokens = tokens  # every prompt's length, padded or cut
        self.model, self.tokenizer = model, tokenizer

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(
            list(prompts), padding="max_length", max_length=self.tokens, truncation=True, add_special_tokens=True, return_tensors="pt"
        ).input_ids

    @property
    def max_tokens(self) -> int:
        return self.tokens - 1  # the end mark takes one

    @property
    def width(self) -> int:
        return self.model.config.d_model

    def count_tokens(self, prompt: str) -> int:
        return len(self.word_tokens(prompt))

    def word_tokens(self, word: str) -> list[int]:
        return self.tokenizer(word, add_special_tokens=False).input_ids

    def frame(self, chunks: list[list[int]]) -> torch.Tensor:
        """Chunks of at most max_tokens ids -> (B, tokens): each chunk, the end mark, padding."""
        rows = torch.full((len(chunks), self.tokens), self.tokenizer.pad_token_id, dtype=torch.long)
        for row, ids in zip(rows, chunks):
            if len(ids) > self.max_tokens:
                raise ValueError(f"a chunk of {len(ids)} tokens does not fit a text encoder that reads {self.max_tokens}")
            row[: len(ids) + 1] = torch.tensor([*ids, self.tokenizer.eos_token_id], dtype=torch.long)
        return rows

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, tokens: torch.Tensor) -> TextEncoding:
        hidden = self.model(tokens)[0]  # (B, tokens, d_model): the final layer norm applied
        return TextEncoding(hidden, None)
