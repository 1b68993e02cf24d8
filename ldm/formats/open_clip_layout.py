"""An open_clip text tower's weight names <-> a transformers CLIPTextModel(WithProjection)'s.

SDXL single files keep OpenCLIP ViT-bigG under open_clip's names (one fused `in_proj` per
attention, `text_projection` as a (width, embed) matrix), while SDXL's diffusers folders hold
it as a transformers CLIPTextModelWithProjection. Transformers names are given "bare", without
the `text_model.` level that some transformers classes and versions add.
"""

from __future__ import annotations

import torch

# open_clip's per-block part names -> transformers' (inside encoder.layers.N / resblocks.N).
BLOCK_PARTS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}
TOP_LEVEL = {
    "token_embedding.weight": "embeddings.token_embedding.weight",
    "positional_embedding": "embeddings.position_embedding.weight",
    "ln_final.weight": "final_layer_norm.weight",
    "ln_final.bias": "final_layer_norm.bias",
}
PROJECTION = "text_projection"
# Kept by open_clip checkpoints (SDXL's among them), not part of the text model.
IGNORED = ("attn_mask", "logit_scale")


def open_clip_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip text tower weights -> bare transformers CLIP names (the projection as
    `text_projection.weight` when the tower has one)."""
    out = {}
    for key, value in state.items():
        if key in IGNORED:
            continue
        if key == PROJECTION:
            out["text_projection.weight"] = value.T.contiguous()  # x @ P in open_clip, a Linear in transformers
        elif key in TOP_LEVEL:
            out[TOP_LEVEL[key]] = value
        else:
            out.update(_block_to_transformers(key, value))
    return out


def _block_to_transformers(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    head, index, rest = _split_block(key, "transformer.resblocks.")
    layer = f"encoder.layers.{index}."
    if rest in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = rest.rsplit("_", 1)[1]  # weight | bias
        q, k, v = value.chunk(3, dim=0)  # open_clip stacks the three projections
        return {f"{layer}self_attn.{name}_proj.{kind}": part.contiguous() for name, part in zip("qkv", (q, k, v))}
    part, _, leaf = rest.rpartition(".")
    if part not in BLOCK_PARTS:
        raise KeyError(key)
    return {f"{layer}{BLOCK_PARTS[part]}.{leaf}": value}


def transformers_to_open_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The way back: bare transformers CLIP names -> open_clip text tower names."""
    top = {v: k for k, v in TOP_LEVEL.items()}
    parts = {v: k for k, v in BLOCK_PARTS.items()}
    out, fused = {}, {}
    for key, value in state.items():
        if key == "text_projection.weight":
            out[PROJECTION] = value.T.contiguous()
        elif key in top:
            out[top[key]] = value
        elif key.startswith("encoder.layers."):
            _, index, rest = _split_block(key, "encoder.layers.")
            part, _, leaf = rest.rpartition(".")
            if part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                fused.setdefault((index, leaf), {})[part[-6]] = value
            else:
                out[f"transformer.resblocks.{index}.{parts[part]}.{leaf}"] = value
        else:
            raise KeyError(key)
    for (index, leaf), qkv in fused.items():
        out[f"transformer.resblocks.{index}.attn.in_proj_{leaf}"] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out


def _split_block(key: str, prefix: str) -> tuple[str, str, str]:
    if not key.startswith(prefix):
        raise KeyError(key)
    index, _, rest = key[len(prefix) :].partition(".")
    return prefix, index, rest
