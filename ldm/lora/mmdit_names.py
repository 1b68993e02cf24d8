"""kohya's (sd-scripts') names for an MMDiT's modules: `lora_unet_` and the original SD3 module
name with underscores for dots (joint_blocks_0_x_block_attn_qkv, final_layer_adaLN_modulation_1),
which ldm.formats.mmdit_layout maps to diffusers' SD3Transformer2DModel. Two are not renames:
  - a fused qkv adapter (up (3d, r), down (r, d)) is three adapters, on to_q, to_k and to_v,
    sharing down, the up split in thirds (the fused delta's rows are q's, then k's, then v's);
  - the continuous adaLN linears whose output halves the two layouts order differently get their
    up's halves swapped, as their weights are (delta rows = up rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ldm.formats.mmdit_layout import original_module_pieces, swapped_modules
from ldm.lora.module_names import ADAPTED


@dataclass(frozen=True)
class Piece:
    """The share of one adapter that lands on one of our modules."""

    module: str  # the module's name as in named_modules()
    of: int = 1  # the adapter's output rows hold this many modules' outputs...
    index: int = 0  # ...and this module's are the index-th part
    swapped: bool = False  # its output halves are ordered the other way round

    def up(self, up: torch.Tensor) -> torch.Tensor:
        rows = up.chunk(self.of, dim=0)[self.index]  # (out / of, rank[, 1, 1])
        return torch.cat(rows.chunk(2, dim=0)[::-1]) if self.swapped else rows


def mmdit_kohya_index(transformer: torch.nn.Module) -> dict[str, tuple[Piece, ...]]:
    """kohya's underscored original names -> the pieces of `transformer` each adapts."""
    blocks = len(transformer.transformer_blocks)
    modules = dict(transformer.named_modules())
    swapped = set(swapped_modules(blocks))
    index = {}
    for original, names in original_module_pieces(blocks).items():
        if all(isinstance(modules.get(name), ADAPTED) for name in names):  # the last block's context side has no mlp
            index[original.replace(".", "_")] = tuple(Piece(name, len(names), i, name in swapped) for i, name in enumerate(names))
    return index
