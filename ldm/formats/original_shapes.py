"""What the keys and shapes of an original-layout checkpoint tell of its architecture (the
U-Net's levels, channels and attention, the VAE's, a CLIP text model's), completed by the
facts they cannot tell (heads, norm groups, activations: ldm/formats/layouts/stable_diffusion.yaml).
Shared by the SD 1.x/2.x reader (ldm.formats.single_file) and SDXL's (ldm.formats.sdxl_single_file)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch
import yaml

from ldm.formats.original_layout import UNET_PREFIX, VAE_PREFIX
from ldm.models.weights import ModelError, load_state


@cache
def layout_facts() -> dict:
    return yaml.safe_load((Path(__file__).parent / "layouts" / "stable_diffusion.yaml").read_text())


def indices(state, prefix: str) -> list[int]:
    """Sorted distinct integers N of keys `prefix N.`."""
    return sorted({int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)})


def infer_vae(state, facts) -> dict:
    """The VAE's settings (our VAEConfig's fields) from `first_stage_model.*`."""
    down = VAE_PREFIX + "encoder.down."
    return {
        "in_channels": state[VAE_PREFIX + "encoder.conv_in.weight"].shape[1],
        "out_channels": state[VAE_PREFIX + "decoder.conv_out.weight"].shape[0],
        "latent_channels": state[VAE_PREFIX + "post_quant_conv.weight"].shape[0],
        "block_out_channels": [state[f"{down}{i}.block.0.conv1.weight"].shape[0] for i in indices(state, down)],
        "layers_per_block": len(indices(state, down + "0.block.")),
        "norm_num_groups": facts["norm_num_groups"],
        "scaling_factor": facts["vae_scaling_factor"],
    }


def infer_unet(state, facts) -> dict:
    """The U-Net's settings (UNet2DConditionModel's keyword arguments) from `model.diffusion_model.*`."""
    blocks = indices(state, UNET_PREFIX + "input_blocks.")
    downsamplers = [i for i in blocks if UNET_PREFIX + f"input_blocks.{i}.0.op.weight" in state]
    levels = len(downsamplers) + 1
    layers = (len(blocks) - 1 - len(downsamplers)) // levels
    first = [1 + level * (layers + 1) for level in range(levels)]
    channels = [state[UNET_PREFIX + f"input_blocks.{b}.0.out_layers.3.weight"].shape[0] for b in first]
    attends = [any(k.startswith(UNET_PREFIX + f"input_blocks.{b}.1.") for k in state) for b in first]
    to_k = next(v for k, v in state.items() if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight"))
    proj_in = next(v for k, v in state.items() if k.startswith(UNET_PREFIX) and k.endswith("proj_in.weight"))
    heads = facts["unet_heads"] or [c // facts["unet_head_width"] for c in channels]
    return {
        "in_channels": state[UNET_PREFIX + "input_blocks.0.0.weight"].shape[1],
        "out_channels": state[UNET_PREFIX + "out.2.weight"].shape[0],
        "block_out_channels": channels,
        "layers_per_block": layers,
        "attention_head_dim": heads,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "norm_num_groups": facts["norm_num_groups"],
        "sample_size": facts["sample_size"],
        "cross_attention_dim": to_k.shape[1],
        "use_linear_projection": proj_in.ndim == 2,
    }


def infer_open_clip(state, prefix: str, facts) -> dict:
    """An open_clip text tower's settings (our TextEncoderConfig's fields) from `prefix*`."""
    vocab, width = state[prefix + "token_embedding.weight"].shape
    return {
        "width": width,
        "heads": width // facts["text_head_width"],
        "layers": len(indices(state, prefix + "transformer.resblocks.")),
        "context_length": state[prefix + "positional_embedding"].shape[0],
        "vocab_size": vocab,
        "embed_dim": state[prefix + "text_projection"].shape[1],
        "mlp_ratio": state[prefix + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        "layer": facts["text_layer"],
    }


def hf_clip_model(weights: dict[str, torch.Tensor], tokenizer, activation: str, head_width: int):
    """A transformers CLIP text model built from its weights' shapes (bare names, without
    `text_model.`) and loaded with them: CLIPTextModelWithProjection when they hold a
    `text_projection.weight`, else CLIPTextModel."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab, width = weights["embeddings.token_embedding.weight"].shape
    projection = weights.get("text_projection.weight")
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=weights["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len(indices(weights, "encoder.layers.")),
        num_attention_heads=max(1, width // head_width),
        max_position_embeddings=weights["embeddings.position_embedding.weight"].shape[0],
        hidden_act=activation,
        projection_dim=projection.shape[0] if projection is not None else 512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = (CLIPTextModelWithProjection if projection is not None else CLIPTextModel)(config)
    load_state(model, {_placed(model, k): v for k, v in weights.items()}, "text encoder")
    return model.eval()


def _placed(model, bare: str) -> str:
    """`bare` as `model` names it: transformers 5 drops CLIPTextModel's text_model level, 4 keeps it."""
    if bare.startswith("text_projection.") or hasattr(model, "embeddings"):
        return bare
    return f"text_model.{bare}"


def bare_clip_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP model's state dict without the `text_model.` level."""
    return {k.removeprefix("text_model."): v for k, v in state.items()}


# What reading an architecture from a file's weight shapes raises when the file lacks a key or
# holds shapes that fit no architecture.
SHAPE_ERRORS = (KeyError, IndexError, ZeroDivisionError, StopIteration)


def unreadable_architecture(path: Path, error: Exception) -> ModelError:
    """The one-line error for a file whose architecture its weights do not tell (one of SHAPE_ERRORS)."""
    why = f"missing {error}" if isinstance(error, KeyError) else f"{type(error).__name__} reading its shapes"
    return ModelError(f"{path}: cannot read the architecture from its weights ({why})")
