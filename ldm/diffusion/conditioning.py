"""What a denoiser is conditioned on, as one object.

The text side produces it, guidance doubles it for the unconditional pass, and the backbone's
call reads the parts its family takes. A new kind of condition (SDXL's pooled text and size
ids, an upscaler's noise level and low-resolution picture) is one more field here, not one
more argument through every signature between the text encoder and the denoiser."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass(frozen=True)
class Conditioning:
    """A batch's conditions; every tensor's first dimension is the batch.

    tokens:  (B, L, D) the text encoders' token embeddings (cross-attention's context).
    mask:    (B, L) 1 where a token is attended, or None for all of them.
    pooled:  (B, P) a pooled text embedding (SDXL's, SD3's), or None.
    vectors: named extra inputs, each (B, ...): "guidance_embedding" (a guidance-distilled
             LCM's), and later SDXL's "time_ids", an upscaler's "noise_level".
    concat:  (B, C', h, w) channels the denoiser reads beside the latents (a 9-channel
             inpainting U-Net's mask and masked-image latents), or None.
    """

    tokens: torch.Tensor
    mask: Optional[torch.Tensor] = None
    pooled: Optional[torch.Tensor] = None
    vectors: dict[str, torch.Tensor] = field(default_factory=dict)
    concat: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return len(self.tokens)

    def replace(self, **changes) -> "Conditioning":
        return dataclasses.replace(self, **changes)

    def with_vector(self, name: str, value: torch.Tensor) -> "Conditioning":
        return self.replace(vectors={**self.vectors, name: value})

    def map(self, fn) -> "Conditioning":
        """The same conditions with `fn` applied to every tensor."""
        return Conditioning(
            fn(self.tokens),
            None if self.mask is None else fn(self.mask),
            None if self.pooled is None else fn(self.pooled),
            {name: fn(value) for name, value in self.vectors.items()},
            None if self.concat is None else fn(self.concat),
        )

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "Conditioning":
        """Moved to `device`; floating-point tensors cast to `dtype` (masks and ids keep theirs
        unless they are floating point too)."""

        def move(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.to(device=device, dtype=dtype if dtype is not None and tensor.is_floating_point() else None)

        return self.map(move)

    def repeat(self, n: int) -> "Conditioning":
        """Each condition repeated `n` times along the batch (the batch becomes n * B)."""
        return self.map(lambda t: t.repeat(n, *([1] * (t.dim() - 1))))


def cat_conditions(conditions: list[Conditioning]) -> Conditioning:
    """One batch of `conditions` in order (guidance's unconditional and conditional halves).
    Parts some have and others lack: masks default to all ones; a pooled vector, a named
    vector or concatenated channels must be on all or none."""
    tokens = torch.cat([c.tokens for c in conditions])
    masks = [c.mask for c in conditions]
    mask = None
    if any(m is not None for m in masks):
        like = next(m for m in masks if m is not None)
        mask = torch.cat([m if m is not None else like.new_ones(c.tokens.shape[:2]) for c, m in zip(conditions, masks)])
    names = set(conditions[0].vectors)
    if any(set(c.vectors) != names for c in conditions):
        raise ValueError("conditions to batch together name different vectors")
    return Conditioning(
        tokens,
        mask,
        _cat_all([c.pooled for c in conditions], "pooled"),
        {name: torch.cat([c.vectors[name] for c in conditions]) for name in conditions[0].vectors},
        _cat_all([c.concat for c in conditions], "concat"),
    )


def _cat_all(parts: list[Optional[torch.Tensor]], what: str) -> Optional[torch.Tensor]:
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise ValueError(f"conditions to batch together: some have {what}, some do not")
    return torch.cat(parts)
