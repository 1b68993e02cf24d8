"""Where a U-Net attends: the self-attention layers of one pass, for the step-time rule
(ldm.pipeline.step_time), read from the U-Net's config."""

from __future__ import annotations


def unet_attention_layers(config, cells: int) -> list[tuple[int, int]]:
    """(tokens, channels) of every self-attention layer in a U-Net pass over `cells` latent
    cells: each cross-attention block's transformer layers at its level's resolution (a
    level has a quarter of the cells of the one above), down, mid and up."""
    levels = len(config.down_block_types)
    widths = list(config.block_out_channels)
    per_block = _per_level(config.layers_per_block, levels)
    depth = _per_level(getattr(config, "transformer_layers_per_block", 1), levels)
    layers = []
    for level, kind in enumerate(config.down_block_types):
        if "CrossAttn" in kind:
            layers += [(cells // 4**level, widths[level])] * (per_block[level] * depth[level])
    if "CrossAttn" in (getattr(config, "mid_block_type", None) or "UNetMidBlock2DCrossAttn"):
        layers += [(cells // 4 ** (levels - 1), widths[-1])] * depth[-1]
    for index, kind in enumerate(config.up_block_types):
        level = levels - 1 - index
        if "CrossAttn" in kind:
            layers += [(cells // 4**level, widths[level])] * ((per_block[level] + 1) * depth[level])
    return layers


def _per_level(value, levels: int) -> list[int]:
    """A U-Net config's per-level count (one number for all levels, or a list; nested lists
    of per-layer counts taken at their largest)."""
    if isinstance(value, int):
        return [value] * levels
    return [max(each) if isinstance(each, (list, tuple)) else each for each in value]
