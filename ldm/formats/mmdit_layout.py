"""diffusers SD3Transformer2DModel names <-> the original MMDiT names of Stability's SD3 / SD3.5
single files (`model.diffusion_model.*`: `joint_blocks.N.x_block.*` for the latent patches,
`joint_blocks.N.context_block.*` for the text tokens).

Learnt from diffusers' single_file_utils (convert_sd3_transformer_checkpoint_to_diffusers); the
table below is ours and is read both ways. Two differences are not renames:
  - the original keeps q, k and v as one `qkv` linear; diffusers has three (split on dim 0);
  - the original's continuous adaLN (the final layer's, and the last block's context side, which
    only feeds the others: context_pre_only) puts shift before scale, diffusers scale before
    shift, so those rows swap halves (the same swap undoes itself).
"""

from __future__ import annotations

import torch

from ldm.formats.original_layout import UNET_PREFIX, inverted, rename
from ldm.formats.original_shapes import indices

MMDIT_PREFIX = UNET_PREFIX  # model.diffusion_model.: SD3 files keep the denoiser where SD kept its U-Net
BLOCKS = "joint_blocks."
POSITIONS = ("pos_embed.pos_embed", "pos_embed")  # a bare tensor, no module around it
# (diffusers' three linears, the name they take while fused) per joint attention.
FUSED_ATTENTION = (
    (("attn.to_q", "attn.to_k", "attn.to_v"), "attn.qkv"),
    (("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"), "attn.add_qkv"),
    (("attn2.to_q", "attn2.to_k", "attn2.to_v"), "attn2.qkv"),  # SD3.5's dual attention (latent side only)
)
TOP_MODULES = (
    ("pos_embed.proj", "x_embedder.proj"),
    ("time_text_embed.timestep_embedder.linear_1", "t_embedder.mlp.0"),
    ("time_text_embed.timestep_embedder.linear_2", "t_embedder.mlp.2"),
    ("time_text_embed.text_embedder.linear_1", "y_embedder.mlp.0"),
    ("time_text_embed.text_embedder.linear_2", "y_embedder.mlp.2"),
    ("context_embedder", "context_embedder"),
    ("proj_out", "final_layer.linear"),
    ("norm_out.linear", "final_layer.adaLN_modulation.1"),
)
BLOCK_MODULES = (  # inside transformer_blocks.N / joint_blocks.N
    ("attn.qkv", "x_block.attn.qkv"),
    ("attn.add_qkv", "context_block.attn.qkv"),
    ("attn2.qkv", "x_block.attn2.qkv"),
    ("attn.norm_q", "x_block.attn.ln_q"),
    ("attn.norm_k", "x_block.attn.ln_k"),
    ("attn.norm_added_q", "context_block.attn.ln_q"),
    ("attn.norm_added_k", "context_block.attn.ln_k"),
    ("attn2.norm_q", "x_block.attn2.ln_q"),
    ("attn2.norm_k", "x_block.attn2.ln_k"),
    ("attn.to_out.0", "x_block.attn.proj"),
    ("attn.to_add_out", "context_block.attn.proj"),
    ("attn2.to_out.0", "x_block.attn2.proj"),
    ("norm1.linear", "x_block.adaLN_modulation.1"),
    ("norm1_context.linear", "context_block.adaLN_modulation.1"),
    ("ff.net.0.proj", "x_block.mlp.fc1"),
    ("ff.net.2", "x_block.mlp.fc2"),
    ("ff_context.net.0.proj", "context_block.mlp.fc1"),
    ("ff_context.net.2", "context_block.mlp.fc2"),
)


def _table(blocks: int) -> list[tuple[str, str, dict]]:
    table = [(ours, theirs, {}) for ours, theirs in TOP_MODULES]
    for i in range(blocks):
        table += [(f"transformer_blocks.{i}.{ours}", f"{BLOCKS}{i}.{theirs}", {}) for ours, theirs in BLOCK_MODULES]
    return table


def _swapped_rows(blocks: int) -> tuple[str, ...]:
    """The continuous adaLN rows (diffusers' names) whose halves trade places."""
    return tuple(name + "." for name in swapped_modules(blocks))


def swapped_modules(blocks: int) -> tuple[str, str]:
    """The continuous adaLN linears (diffusers' names) whose output halves trade places."""
    return "norm_out.linear", f"transformer_blocks.{blocks - 1}.norm1_context.linear"


def original_module_pieces(blocks: int) -> dict[str, tuple[str, ...]]:
    """Original module name (joint_blocks.0.x_block.attn.qkv) -> the diffusers modules whose
    outputs it holds, in row order: three for a fused qkv, else one. Norms included."""
    fused = {
        f"transformer_blocks.{i}.{name}": tuple(f"transformer_blocks.{i}.{part}" for part in parts)
        for i in range(blocks)
        for parts, name in FUSED_ATTENTION
    }
    return {theirs: fused.get(ours, (ours,)) for ours, theirs, _ in _table(blocks)}


def _swap_halves(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    rows = _swapped_rows(blocks)
    return {k: torch.cat(v.chunk(2, dim=0)[::-1]) if k.startswith(rows) else v for k, v in state.items()}


def mmdit_to_original(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """An SD3Transformer2DModel state dict -> `model.diffusion_model.*` original names."""
    state = _swap_halves(dict(state), blocks)
    positions = state.pop(POSITIONS[0])
    for i in range(blocks):
        for parts, fused in FUSED_ATTENTION:
            for leaf in ("weight", "bias"):
                names = [f"transformer_blocks.{i}.{part}.{leaf}" for part in parts]
                if names[0] in state:
                    state[f"transformer_blocks.{i}.{fused}.{leaf}"] = torch.cat([state.pop(name) for name in names])
    out = rename(state, _table(blocks), "MMDiT", "the original SD3 layout")
    out[POSITIONS[1]] = positions
    return {MMDIT_PREFIX + k: v for k, v in out.items()}


def mmdit_blocks(state: dict[str, torch.Tensor]) -> int:
    return len(indices(state, MMDIT_PREFIX + BLOCKS))


def mmdit_from_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`model.diffusion_model.*` of an SD3 file -> an SD3Transformer2DModel state dict."""
    blocks = mmdit_blocks(state)
    inner = {k[len(MMDIT_PREFIX) :]: v for k, v in state.items() if k.startswith(MMDIT_PREFIX)}
    positions = inner.pop(POSITIONS[1])
    out = rename(inner, inverted(_table(blocks)), "MMDiT", "a diffusers SD3Transformer2DModel")
    for i in range(blocks):
        for parts, fused in FUSED_ATTENTION:
            for leaf in ("weight", "bias"):
                name = f"transformer_blocks.{i}.{fused}.{leaf}"
                if name in out:
                    out.update(zip((f"transformer_blocks.{i}.{part}.{leaf}" for part in parts), out.pop(name).chunk(3, dim=0)))
    out[POSITIONS[0]] = positions
    return _swap_halves(out, blocks)
