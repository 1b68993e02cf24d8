"""Text encoders: prompts -> token embeddings (B, context_length, width) for cross-attention,
and a pooled embedding of the whole prompt.

`OpenClipTextEncoder` is ours (open_clip's text tower and tokenizer, any size, trainable by
the clip stage). `HFClipTextEncoder` only reads the transformers CLIPTextModel found in
diffusers-format Stable Diffusion folders. Both are `TextEncoder`s; the text side of a model
(ldm.models.text_conditioner) is a list of them.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import torch
from torch import nn

from ldm.config import ConfigError, TextEncoderConfig
from ldm.models.weights import load_state, read_safetensors


class TextEncoding(NamedTuple):
    """What a text encoder makes of a batch of token ids.

    hidden: (B, L, width) the token embeddings the denoiser attends to (the chosen layer).
    pooled: (B, P) one vector per prompt: CLIP's final-layer-normed end-of-text token, through
            the text projection where the model has one (P = embed_dim), else as it is (P = width).
    """

    hidden: torch.Tensor
    pooled: torch.Tensor


@runtime_checkable
class TextEncoder(Protocol):
    """What the text side, LoRA and learned tokens use of a text encoder."""

    @property
    def width(self) -> int: ...  # of the hidden states

    @property
    def max_tokens(self) -> int: ...  # prompt tokens read; the rest is cut

    def tokenize(self, prompts: list[str]) -> torch.Tensor: ...  # (B, L) int64

    def __call__(self, tokens: torch.Tensor) -> TextEncoding: ...

    def count_tokens(self, prompt: str) -> int: ...

    def word_tokens(self, word: str) -> list[int]: ...  # the ids `word` becomes, no start or end mark

    def frame(self, chunks: list[list[int]]) -> torch.Tensor: ...  # (B, max_tokens + 2) ids: marks and padding added

    @property
    def token_embedding(self) -> nn.Embedding: ...


def resolve_arch(config: TextEncoderConfig) -> TextEncoderConfig:
    """Fills width/heads/layers/... from open_clip's bundled config named by `arch`."""
    if config.arch is None:
        return config
    import open_clip

    model_config = open_clip.get_model_config(config.arch)
    if model_config is None:
        raise ConfigError(f"model.text_encoder.arch {config.arch!r} is not an open_clip model config")
    text = model_config["text_cfg"]
    defaults = TextEncoderConfig()
    config.width = text.get("width", defaults.width)
    config.heads = text.get("heads", defaults.heads)
    config.layers = text.get("layers", defaults.layers)
    config.context_length = text.get("context_length", defaults.context_length)
    config.vocab_size = text.get("vocab_size", defaults.vocab_size)
    config.mlp_ratio = text.get("mlp_ratio", defaults.mlp_ratio)
    config.embed_dim = model_config["embed_dim"]
    config.arch = None  # resolved: the saved config stands on its own
    return config


@lru_cache(maxsize=4)
def open_clip_tokenizer(context_length: int):
    """open_clip's BPE tokenizer, built once per context length: building one reads and parses
    its 49k-merge vocabulary (most of the time a small text encoder takes to build); it only
    memoizes as it works, so encoders can share it."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


class OpenClipTextEncoder(nn.Module):
    """open_clip's TextTransformer; hidden states from block `layer_index` after the final
    LayerNorm, pooled output as open_clip's own (CLIP.encode_text without normalising)."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        from open_clip.transformer import TextTransformer

        self.config = config
        self.tower = TextTransformer(
            context_length=config.context_length,
            vocab_size=config.vocab_size,
            width=config.width,
            heads=config.heads,
            layers=config.layers,
            mlp_ratio=config.mlp_ratio,
            output_dim=config.embed_dim,
        )
        self.tokenizer = open_clip_tokenizer(config.context_length)
        # Index of the block whose output (after the final LayerNorm) conditions the U-Net.
        self.layer_index = config.layers - (2 if config.layer == "penultimate" else 1)

    @property
    def width(self) -> int:
        return self.config.width

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(list(prompts))  # (B, context_length) int64

    @property
    def max_tokens(self) -> int:
        """Prompt tokens read; the rest is cut (the start and end marks take two places)."""
        return self.config.context_length - 2

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer.encode(prompt))

    def word_tokens(self, word: str) -> list[int]:
        """The token ids `word` becomes (no start or end mark)."""
        return self.tokenizer.encode(word)

    def frame(self, chunks: list[list[int]]) -> torch.Tensor:
        """Chunks of at most max_tokens ids -> (B, context_length): start and end marks, zeros after, as `tokenize`."""
        marks = self.tokenizer.sot_token_id, self.tokenizer.eot_token_id
        return framed(chunks, *marks, pad=0, length=self.config.context_length)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.tower.token_embedding

    def forward(self, tokens: torch.Tensor) -> TextEncoding:
        out = self.tower.forward_intermediates(
            tokens, indices=[self.layer_index], normalize_intermediates=True, output_fmt="NLC"
        )  # every block runs: the pooled output is the last one's, whichever layer conditions
        return TextEncoding(out["text_intermediates"][0], out["text_features"])  # (B, L, width), (B, embed_dim)


class HFClipTextEncoder(nn.Module):
    """transformers CLIPTextModel (or CLIPTextModelWithProjection) + CLIPTokenizer, as stored
    in diffusers SD folders. `layer`: "last" (the last hidden state, final LayerNorm applied:
    SD 1/2) or "penultimate" (the second-to-last block's output as it is, no final LayerNorm:
    both of SDXL's encoders)."""

    def __init__(self, model, tokenizer, layer: str = "last"):
        super().__init__()
        if layer not in ("last", "penultimate"):
            raise ValueError(f"layer must be 'last' or 'penultimate', not {layer!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.layer = layer

    @property
    def width(self) -> int:
        return self.model.config.hidden_size

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        return self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids

    @property
    def max_tokens(self) -> int:
        return self.tokenizer.model_max_length - 2

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt, add_special_tokens=False).input_ids)

    def word_tokens(self, word: str) -> list[int]:
        return self.tokenizer(word, add_special_tokens=False).input_ids

    def frame(self, chunks: list[list[int]]) -> torch.Tensor:
        """Chunks of at most max_tokens ids -> (B, model_max_length), marked and padded as `tokenize`."""
        tokenizer = self.tokenizer
        marks = tokenizer.bos_token_id, tokenizer.eos_token_id
        return framed(chunks, *marks, pad=tokenizer.pad_token_id, length=tokenizer.model_max_length)

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, tokens: torch.Tensor) -> TextEncoding:
        # Same as StableDiffusionPipeline: the last hidden state, final LayerNorm applied
        # (SD 2 folders already cut the model to its penultimate layer in their config).
        penultimate = self.layer == "penultimate"
        out = self.model(tokens, output_hidden_states=penultimate)
        hidden = out.hidden_states[-2] if penultimate else out.last_hidden_state
        # A model with a projection (SDXL's second encoder) pools into text_embeds.
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
        return TextEncoding(hidden, pooled)  # (B, L, width), (B, P)


def framed(chunks: list[list[int]], start: int, end: int, pad: int, length: int) -> torch.Tensor:
    """(B, length) token ids: each chunk between the start and end marks, then padding."""
    rows = torch.full((len(chunks), length), pad, dtype=torch.long)
    for row, ids in zip(rows, chunks):
        if len(ids) > length - 2:
            raise ValueError(f"a chunk of {len(ids)} tokens does not fit a text encoder that reads {length - 2}")
        row[: len(ids) + 2] = torch.tensor([start, *ids, end], dtype=torch.long)
    return rows


def build_text_encoder(config: TextEncoderConfig) -> OpenClipTextEncoder:
    encoder = OpenClipTextEncoder(resolve_arch(config))
    if config.pretrained:
        load_openclip_text_weights(encoder, config.pretrained)
    return encoder


def load_openclip_text_weights(encoder: OpenClipTextEncoder, path: str | Path) -> None:
    """Loads the text tower of a real OpenCLIP checkpoint (.safetensors) into `encoder`."""
    state = read_safetensors(path)
    # An OpenCLIP CLIP model keeps its text tower at top level beside `visual.*`.
    text_state = {k: v for k, v in state.items() if not k.startswith("visual.") and not k.startswith("logit_")}
    text_state = {k.removeprefix("text."): v for k, v in text_state.items()}
    load_state(encoder.tower, text_state, "text encoder (OpenCLIP)")
