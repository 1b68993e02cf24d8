"""diffusers module names <-> the original (CompVis / Stability) Stable Diffusion checkpoint
key names, for the U-Net (SDXL's too: its size embedding is `label_emb`) and the VAE.

Used to export one-file checkpoints that AUTOMATIC1111, ComfyUI and InvokeAI read, and to
read SDXL files back (the same tables, inverted). SD 1.x/2.x files are read through
diffusers' own single_file_utils; the tests check that both ways agree with diffusers.
"""

from __future__ import annotations

import torch

from ldm.errors import LdmError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
OPEN_CLIP_PREFIX = "cond_stage_model.model."

UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_RESNET_PARTS = {"conv_shortcut": "nin_shortcut"}
VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


class LayoutError(LdmError, ValueError):
    """A state dict with a key the original layout has no place for."""


def unet_prefixes(config) -> list[tuple[str, str, dict]]:
    """(diffusers module, original module, renames of the parts inside it) for a U-Net config."""
    per_level = config.layers_per_block + 1  # resnets (+ attentions) then a down/upsampler
    table = [
        ("time_embedding.linear_1", "time_embed.0", {}),
        ("time_embedding.linear_2", "time_embed.2", {}),
        # SDXL's text_time embedding (pooled text + size ids); absent from SD 1.x/2.x weights.
        ("add_embedding.linear_1", "label_emb.0.0", {}),
        ("add_embedding.linear_2", "label_emb.0.2", {}),
        ("conv_in", "input_blocks.0.0", {}),
        ("conv_norm_out", "out.0", {}),
        ("conv_out", "out.2", {}),
        ("mid_block.resnets.0", "middle_block.0", UNET_RESNET_PARTS),
        ("mid_block.attentions.0", "middle_block.1", {}),
        ("mid_block.resnets.1", "middle_block.2", UNET_RESNET_PARTS),
    ]
    for level in range(len(config.down_block_types)):
        for j in range(config.layers_per_block):
            block = 1 + level * per_level + j
            table.append((f"down_blocks.{level}.resnets.{j}", f"input_blocks.{block}.0", UNET_RESNET_PARTS))
            table.append((f"down_blocks.{level}.attentions.{j}", f"input_blocks.{block}.1", {}))
        table.append((f"down_blocks.{level}.downsamplers.0.conv", f"input_blocks.{(level + 1) * per_level}.0.op", {}))
    for level, kind in enumerate(config.up_block_types):
        for j in range(per_level):
            block = level * per_level + j
            table.append((f"up_blocks.{level}.resnets.{j}", f"output_blocks.{block}.0", UNET_RESNET_PARTS))
            table.append((f"up_blocks.{level}.attentions.{j}", f"output_blocks.{block}.1", {}))
        # The upsampler follows the last resnet, and its attention when the level has one.
        slot = 2 if "CrossAttn" in kind else 1
        table.append((f"up_blocks.{level}.upsamplers.0.conv", f"output_blocks.{level * per_level + per_level - 1}.{slot}.conv", {}))
    return table


def vae_prefixes(config) -> list[tuple[str, str, dict]]:
    levels = len(config.block_out_channels)
    table = [("quant_conv", "quant_conv", {}), ("post_quant_conv", "post_quant_conv", {})]
    for part in ("encoder", "decoder"):
        table += [
            (f"{part}.conv_in", f"{part}.conv_in", {}),
            (f"{part}.conv_out", f"{part}.conv_out", {}),
            (f"{part}.conv_norm_out", f"{part}.norm_out", {}),
            (f"{part}.mid_block.resnets.0", f"{part}.mid.block_1", VAE_RESNET_PARTS),
            (f"{part}.mid_block.resnets.1", f"{part}.mid.block_2", VAE_RESNET_PARTS),
            (f"{part}.mid_block.attentions.0", f"{part}.mid.attn_1", VAE_ATTENTION_PARTS),
        ]
    for level in range(levels):
        # The original decoder counts its levels from the bottom, diffusers from the top.
        up = levels - 1 - level
        for j in range(config.layers_per_block + 1):
            table.append((f"encoder.down_blocks.{level}.resnets.{j}", f"encoder.down.{level}.block.{j}", VAE_RESNET_PARTS))
            table.append((f"decoder.up_blocks.{level}.resnets.{j}", f"decoder.up.{up}.block.{j}", VAE_RESNET_PARTS))
        table.append((f"encoder.down_blocks.{level}.downsamplers.0.conv", f"encoder.down.{level}.downsample.conv", {}))
        table.append((f"decoder.up_blocks.{level}.upsamplers.0.conv", f"decoder.up.{up}.upsample.conv", {}))
    return table


def rename(state: dict[str, torch.Tensor], table: list[tuple[str, str, dict]], what: str, into: str = "the original Stable Diffusion layout") -> dict[str, torch.Tensor]:
    by_prefix = {new: (old, parts) for new, old, parts in table}
    out = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        # The longest listed module that contains this key (parts may hold dots: to_out.0).
        prefix = next((p for p in _ancestors(module) if p in by_prefix), None)
        if prefix is None:
            raise LayoutError(f"{what} key {key!r} has no place in {into}")
        original, parts = by_prefix[prefix]
        inner = module[len(prefix) + 1 :] if module != prefix else ""
        inner = _rename_head(inner, parts)
        out[".".join(p for p in (original, inner, leaf) if p)] = value
    return out


def _ancestors(module: str):
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        yield ".".join(parts[:end])


def _rename_head(inner: str, parts: dict) -> str:
    for old, new in parts.items():
        if inner == old or inner.startswith(old + "."):
            return new + inner[len(old) :]
    return inner


def inverted(table: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict]]:
    """The same table read the other way: original module -> diffusers module."""
    return [(old, new, {v: k for k, v in parts.items()}) for new, old, parts in table]


def unet_to_original(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    return {UNET_PREFIX + k: v for k, v in rename(state, unet_prefixes(config), "U-Net").items()}


def vae_to_original(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in rename(state, vae_prefixes(config), "VAE").items():
        # The original mid-block attention uses 1x1 convolutions where diffusers has linears.
        if ".mid.attn_1." in key and key.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[VAE_PREFIX + key] = value
    return out


def unet_from_original(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """`model.diffusion_model.*` weights -> a diffusers UNet2DConditionModel state dict."""
    inner = {k[len(UNET_PREFIX) :]: v for k, v in state.items() if k.startswith(UNET_PREFIX)}
    return rename(inner, inverted(unet_prefixes(config)), "U-Net", "a diffusers U-Net")


def vae_from_original(state: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """`first_stage_model.*` weights -> a diffusers AutoencoderKL state dict."""
    inner = {k[len(VAE_PREFIX) :]: v for k, v in state.items() if k.startswith(VAE_PREFIX)}
    out = {}
    for key, value in rename(inner, inverted(vae_prefixes(config)), "VAE", "a diffusers VAE").items():
        # diffusers' mid-block attention is linear where the original has 1x1 convolutions.
        if ".mid_block.attentions.0." in key and key.endswith("weight") and value.ndim == 4:
            value = value[:, :, 0, 0]
        out[key] = value
    return out


def open_clip_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our text tower already has open_clip's names, which SD 2.x keeps under one prefix."""
    return {OPEN_CLIP_PREFIX + k: v for k, v in state.items()}
