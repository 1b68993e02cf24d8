"""Training embedding rows for a few words (textual inversion) while the text encoder stays frozen."""

from __future__ import annotations

import torch
from torch import nn

from ldm.config import ConfigError
from ldm.lora.token_embeddings import single_token


class LearnedTokens(nn.Module):
    """Trainable rows for one-token `words`, put in place of the encoder's own rows by a
    forward hook on its embedding table (the table itself does not train, so weight decay
    and checkpoints touch only these rows). They start as the rows they replace: the model
    is unchanged until trained."""

    def __init__(self, encoder, words: list[str]):
        super().__init__()
        ids = []
        for word in words:
            try:
                ids.append(single_token(encoder, word))
            except ValueError as error:
                raise ConfigError(f"lora.tokens: {error}") from None
        self.words = list(words)
        table = encoder.token_embedding
        self.register_buffer("ids", torch.tensor(ids, dtype=torch.long, device=table.weight.device), persistent=False)
        self.rows = nn.Parameter(table.weight[self.ids].detach().clone().float())  # (n, width)
        self.enabled = True
        table.register_forward_hook(self._replace)

    def _replace(self, module, inputs, output):
        if not self.enabled:
            return output
        match = inputs[0].unsqueeze(-1) == self.ids  # (B, L, n)
        replaced = match.to(self.rows.dtype) @ self.rows  # (B, L, width)
        return torch.where(match.any(-1, keepdim=True), replaced.to(output.dtype), output)

    def vectors(self) -> dict[str, torch.Tensor]:
        """word -> its learned row as a (1, width) vector."""
        return {word: self.rows[i : i + 1].detach() for i, word in enumerate(self.words)}
