"""One-file checkpoints in the original Stable Diffusion layout (what AUTOMATIC1111,
ComfyUI and InvokeAI keep): read SD 1.x / 2.x files (and their 9-channel inpainting
variants) offline, and write any model in that layout.

The architecture is read from the keys and shapes; what they cannot tell (attention heads,
noise schedule, latent scale) comes from the facts in ldm/formats/layouts/stable_diffusion.yaml.
Files written here also carry our resolved model config in their metadata, so they load
back exactly. Key renames towards diffusers are diffusers' own (single_file_utils).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import torch
import yaml

from ldm.config import ConfigError, ModelConfig, model_config_from_dict, model_to_dict
from ldm.files import clean_leftovers, writing_file
from ldm.models.weights import ModelError, load_state, read_safetensors, refuse_pickle
from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.backbones.unet import UNet
from ldm.diffusion.schedule import scheduler_config
from ldm.models.autoencoder import build_vae
from ldm.models.clip_tokenizer import clip_tokenizer
from ldm.models.components import Components
from ldm.models.text_conditioner import TextConditioner
from ldm.models.text_encoder import HFClipTextEncoder, build_text_encoder
from ldm.formats.single_file_prediction import detected_prediction_type, sidecar_prediction_type
from ldm.formats.original_layout import (
    OPEN_CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    LayoutError,
    open_clip_to_original,
    unet_to_original,
    vae_to_original,
)

CONFIG_METADATA = "ldm_model"  # our resolved model config (JSON) in the file's metadata
HF_CLIP_PREFIX = "cond_stage_model.transformer."
# Kept by some open_clip checkpoints, not part of the text tower we build.
OPEN_CLIP_EXTRAS = ("attn_mask", "logit_scale")


@cache
def layout_facts() -> dict:
    return yaml.safe_load((Path(__file__).parent / "layouts" / "stable_diffusion.yaml").read_text())


# ----------------------------------------------------------------------------- loading


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata() or {}


def load_single_file(path: str | Path) -> Components:
    path = Path(path)
    refuse_pickle(path)
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{path} is a file but not .safetensors; a single-file model must be a .safetensors checkpoint")
    state = read_safetensors(path)
    if not any(k.startswith(UNET_PREFIX) for k in state) or not any(k.startswith(VAE_PREFIX) for k in state):
        raise ModelError(f"{path} is not a Stable Diffusion checkpoint: no {UNET_PREFIX}* or {VAE_PREFIX}* weights")
    if any(k.startswith("conditioner.embedders.") for k in state):
        raise ModelError(f"{path} is an SDXL checkpoint; SDXL single files are not supported yet (a diffusers SDXL folder is)")
    layout = "sd1" if any(k.startswith(HF_CLIP_PREFIX) for k in state) else "sd2"
    if layout == "sd2" and not any(k.startswith(OPEN_CLIP_PREFIX) for k in state):
        raise ModelError(f"{path} has no text encoder weights ({HF_CLIP_PREFIX}* or {OPEN_CLIP_PREFIX}*)")
    prediction_type = sidecar_prediction_type(path)  # the user's word (ldm.formats.single_file_prediction)
    try:
        config = _config_from_metadata(read_metadata(path)) or infer_model_config(state, layout, path.stem, prediction_type)
        if prediction_type is not None:
            config.scheduler.prediction_type = prediction_type
    except (KeyError, IndexError, ZeroDivisionError) as error:
        raise ModelError(f"{path}: cannot read the architecture from its weights (missing {error})") from None
    except ConfigError as error:
        raise ModelError(f"{path}: {error}") from None
    return components_from_original(state, config, layout)


def _config_from_metadata(metadata: dict[str, str]) -> ModelConfig | None:
    if CONFIG_METADATA not in metadata:
        return None
    return model_config_from_dict(json.loads(metadata[CONFIG_METADATA]))


def _indices(state, prefix: str) -> list[int]:
    """Sorted distinct integers N of keys `prefix N.`."""
    return sorted({int(k[len(prefix) :].split(".")[0]) for k in state if k.startswith(prefix)})


def infer_model_config(state: dict[str, torch.Tensor], layout: str, name: str, prediction_type: str | None = None) -> ModelConfig:
    """The config of an original-layout checkpoint from its shapes and the layout facts;
    epsilon or v as given, else as diffusers tells them apart."""
    facts = layout_facts()[layout]
    prediction_type = prediction_type or detected_prediction_type(state)
    groups = facts["norm_num_groups"]
    vae_prefix = VAE_PREFIX + "encoder.down."
    vae_levels = _indices(state, vae_prefix)
    vae = {
        "in_channels": state[VAE_PREFIX + "encoder.conv_in.weight"].shape[1],
        "out_channels": state[VAE_PREFIX + "decoder.conv_out.weight"].shape[0],
        "latent_channels": state[VAE_PREFIX + "post_quant_conv.weight"].shape[0],
        "block_out_channels": [state[f"{vae_prefix}{i}.block.0.conv1.weight"].shape[0] for i in vae_levels],
        "layers_per_block": len(_indices(state, vae_prefix + "0.block.")),
        "norm_num_groups": groups,
        "scaling_factor": facts["vae_scaling_factor"],
    }
    unet = _infer_unet(state, facts)
    if prediction_type == "v_prediction" and facts.get("v_sample_size"):
        unet["sample_size"] = facts["v_sample_size"]  # SD 2.x v models draw at 768 px
    if layout == "sd2":
        text = _infer_open_clip(state, facts)
    else:  # a transformers CLIP model: its config is read in _hf_clip_text_encoder
        text = {"width": unet["cross_attention_dim"], "heads": 1, "layers": 1}
    model = {"name": name, "vae": vae, "text_encoder": text, "denoiser": {"kind": UNet.kind, **unet}, "scheduler": dict(facts["scheduler"], prediction_type=prediction_type)}
    return model_config_from_dict(model)


def _infer_unet(state, facts) -> dict:
    blocks = _indices(state, UNET_PREFIX + "input_blocks.")
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


def _infer_open_clip(state, facts) -> dict:
    p = OPEN_CLIP_PREFIX
    vocab, width = state[p + "token_embedding.weight"].shape
    return {
        "width": width,
        "heads": width // facts["text_head_width"],
        "layers": len(_indices(state, p + "transformer.resblocks.")),
        "context_length": state[p + "positional_embedding"].shape[0],
        "vocab_size": vocab,
        "embed_dim": state[p + "text_projection"].shape[1],
        "mlp_ratio": state[p + "transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
        "layer": facts["text_layer"],
    }


def components_from_original(state: dict[str, torch.Tensor], config: ModelConfig, layout: str) -> Components:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )


    if layout == "sd1":
        text_encoder = _hf_clip_text_encoder(state)
    else:
        config.text_encoder.pretrained = None
        text_encoder = build_text_encoder(config.text_encoder)
        tower = {k[len(OPEN_CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(OPEN_CLIP_PREFIX)}
        tower = {k: v for k, v in tower.items() if k not in OPEN_CLIP_EXTRAS}
        load_state(text_encoder.tower, tower, "text encoder")
    vae = build_vae(config.vae)
    levels = len(config.vae.block_out_channels)
    vae_config = {"down_block_types": [None] * levels, "up_block_types": [None] * levels}
    load_state(vae, convert_ldm_vae_checkpoint(state, vae_config), "VAE")
    unet = UNet.build(config.denoiser, text_encoder.width)
    load_state(unet, convert_ldm_unet_checkpoint(state, {"layers_per_block": config.denoiser.layers_per_block}), "U-Net")
    return Components(
        vae=vae,
        conditioner=TextConditioner([text_encoder]),
        denoiser=unet,
        scheduler_config=scheduler_config(config.scheduler),
        config=config if layout == "sd2" else None,  # ours only with our (open_clip) text tower
        name=config.name,
    )


def _hf_clip_text_encoder(state):
    """SD 1.x: OpenAI CLIP ViT-L/14 as a transformers CLIPTextModel; the tokenizer is CLIP's
    BPE, which open_clip ships (so nothing is downloaded)."""
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel


    facts = layout_facts()["sd1"]
    # Files name the parts text_model.*; transformers 5 drops that level, 4 keeps it.
    weights = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(state).items()}
    weights.pop("embeddings.position_ids", None)  # a buffer older files carry
    vocab, width = weights["embeddings.token_embedding.weight"].shape
    tokenizer = clip_tokenizer()
    config = CLIPTextConfig(
        vocab_size=vocab,
        hidden_size=width,
        intermediate_size=weights["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=len({k.split(".")[2] for k in weights if k.startswith("encoder.layers.")}),
        num_attention_heads=max(1, width // facts["text_head_width"]),
        max_position_embeddings=weights["embeddings.position_embedding.weight"].shape[0],
        hidden_act=facts["text_activation"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = CLIPTextModel(config)
    load_state(model, {_hf_clip_name(model, k): v for k, v in weights.items()}, "text encoder")
    return HFClipTextEncoder(model, tokenizer)


def _hf_clip_name(model, bare: str) -> str:
    return bare if hasattr(model, "embeddings") else f"text_model.{bare}"


# ----------------------------------------------------------------------------- saving


def require_unet(components: Components, what: str) -> None:
    """Stable Diffusion's layouts have a U-Net; another denoiser has no place in them."""
    backbone = backbone_of(components.denoiser)
    if not isinstance(backbone, UNet):
        raise ModelError(f"{what} holds a U-Net; this model's denoiser is a {backbone.kind}")


def original_state(components: Components) -> dict[str, torch.Tensor]:
    """All weights under their original Stable Diffusion names."""
    require_unet(components, "an original-layout single file")
    state = unet_to_original(components.denoiser.state_dict(), components.denoiser.config)
    state.update(vae_to_original(components.vae.state_dict(), components.vae.config))
    tower = getattr(components.first_text_encoder, "tower", None)
    if tower is not None:
        state.update(open_clip_to_original(tower.state_dict()))
    else:
        text = components.first_text_encoder.model.state_dict()
        state.update({HF_CLIP_PREFIX + "text_model." + k.removeprefix("text_model."): v for k, v in text.items()})
    return state


def save_single_file(components: Components, path: str | Path, with_config: bool = True, replace: bool = True) -> Path:
    """One .safetensors file in the original layout, written whole or not at all. With
    `replace` False a file that has taken the name meanwhile is kept (ModelError)."""
    from safetensors.torch import save_file

    path = Path(path)
    try:
        state = original_state(components)
    except LayoutError as error:
        raise ModelError(str(error)) from None
    metadata = {"format": "pt"}
    if with_config and components.config is not None:
        metadata[CONFIG_METADATA] = json.dumps(model_to_dict(components.config))
    tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    # What killed writes of any checkpoint here left (a whole checkpoint each) goes first.
    clean_leftovers(path.parent, suffix=".safetensors")
    try:
        with writing_file(path, replace=replace) as temporary:
            save_file(tensors, str(temporary), metadata=metadata)
    except FileExistsError:
        raise ModelError(f"{path} appeared while it was being written; not replacing it") from None
    return path
