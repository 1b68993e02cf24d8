"""Learned token embeddings carried in a LoRA file (textual inversion beside the adapters).

AUTOMATIC1111 reads embeddings bundled in a LoRA file as `bundle_emb.<word>.string_to_param.*`
(kohya's own files: `bundle_emb.<word>.emb_params`), one vector per row, and puts them in
place of `<word>` in prompts. ldm trains and applies them for words that are one token of
the tokenizer: the vector then replaces that token's row of the embedding table, which is the
same thing for every prompt, and needs no change to how prompts are read.
"""

from __future__ import annotations

import torch

BUNDLE_PREFIX = "bundle_emb."
VECTOR_KEYS = ("string_to_param.*", "emb_params")


def single_token(encoder, word: str) -> int:
    """The one token id of `word`; a ValueError naming its pieces if it is more than one."""
    ids = encoder.word_tokens(word)
    if len(ids) != 1:
        pieces = [encoder.tokenizer.decode([i]).strip() for i in ids] if ids else []
        raise ValueError(f"{word!r} is {len(ids)} tokens ({', '.join(pieces) or 'none'}), not one; choose a word the tokenizer keeps whole")
    return ids[0]


def bundled_vectors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """word -> its vectors (n, width) from a LoRA file's tensors."""
    vectors = {}
    for key, tensor in state.items():
        if not key.startswith(BUNDLE_PREFIX):
            continue
        word, _, rest = key.removeprefix(BUNDLE_PREFIX).partition(".")
        if rest in VECTOR_KEYS:
            vectors[word] = tensor.reshape(-1, tensor.shape[-1])
    return vectors


def bundle_tensors(vectors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoRA file's tensors for word -> (n, width) vectors, in AUTOMATIC1111's layout."""
    return {f"{BUNDLE_PREFIX}{word}.string_to_param.*": rows.reshape(-1, rows.shape[-1]) for word, rows in vectors.items()}
