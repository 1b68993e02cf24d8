"""One-file checkpoints in the original Stable Diffusion layout (what AUTOMATIC1111,
ComfyUI and InvokeAI keep): read SD 1.x / 2.x files (and their 9-channel inpainting
variants), SDXL files (ldm.formats.sdxl_single_file), SDXL refiners' (as refiners only:
ldm.formats.sdxl_refiner_file) and SD3 / SD3.5 files (ldm.formats.sd3_single_file) offline, and
write any model in that layout.

The architecture is read from the keys and shapes (ldm.formats.original_shapes); what they
cannot tell (attention heads, noise schedule, latent scale) comes from the facts in
ldm/formats/layouts/stable_diffusion.yaml. Files written here also carry our resolved model
config in their metadata, so they load back exactly. SD 1.x/2.x key renames towards
diffusers are diffusers' own (single_file_utils).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

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
from ldm.formats.original_shapes import (
    SHAPE_ERRORS,
    bare_clip_names,
    hf_clip_model,
    infer_open_clip,
    infer_unet,
    infer_vae,
    layout_facts,
    unreadable_architecture,
)
from ldm.formats.sd3_export import is_sd3_model, sd3_original_state
from ldm.formats.sd3_single_file import is_sd3_state, sd3_components
from ldm.formats.sdxl_refiner_file import is_refiner, is_sdxl_refiner_state, refiner_original_state
from ldm.formats.sdxl_single_file import is_sdxl_state, sdxl_components, sdxl_original_state
from ldm.formats.single_file_prediction import detected_prediction_type, sidecar_parts_from, sidecar_prediction_type
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
    layout = original_family(path, state)
    if layout == "sd3":  # a flow model: no prediction type to choose
        return _sd3_components(path, state)
    prediction_type = sidecar_prediction_type(path)  # the user's word (ldm.formats.single_file_prediction)
    try:
        if layout == "sdxl":
            return sdxl_components(state, path.stem, prediction_type)
        config = _config_from_metadata(read_metadata(path)) or infer_model_config(state, layout, path.stem, prediction_type)
        if prediction_type is not None:
            config.scheduler.prediction_type = prediction_type
    except SHAPE_ERRORS as error:
        raise unreadable_architecture(path, error) from None
    except (ConfigError, LayoutError) as error:
        raise ModelError(f"{path}: {error}") from None
    return components_from_original(state, config, layout)


def _sd3_components(path: Path, state: dict[str, torch.Tensor]) -> Components:
    try:
        return sd3_components(state, path, sidecar_parts_from(path))
    except (KeyError, IndexError, ValueError) as error:
        raise ModelError(f"{path}: cannot read the SD3 architecture from its weights ({error})") from None


def original_family(path: Path, state: dict[str, torch.Tensor]) -> str:
    """sd1, sd2, sdxl or sd3, as the keys say; ModelError in one line for an SDXL refiner and
    keys that fit no family."""
    if is_sd3_state(state):
        return "sd3"
    if is_sdxl_refiner_state(state):
        raise ModelError(f"{path} is an SDXL refiner (its only text encoder is OpenCLIP bigG): give it with --refiner, beside an SDXL base model")
    has_parts = any(k.startswith(UNET_PREFIX) for k in state) and any(k.startswith(VAE_PREFIX) for k in state)
    texts = {
        "sdxl": is_sdxl_state(state),
        "sd1": any(k.startswith(HF_CLIP_PREFIX) for k in state),
        "sd2": any(k.startswith(OPEN_CLIP_PREFIX) for k in state),
    }
    found = [family for family, present in texts.items() if present]
    if not has_parts or len(found) != 1:
        raise ModelError(
            f"{path} is not a Stable Diffusion checkpoint: its keys fit no known family (SD 1.x, SD 2.x, SDXL: "
            f"{UNET_PREFIX}*, {VAE_PREFIX}* and one text side: {HF_CLIP_PREFIX}*, {OPEN_CLIP_PREFIX}* or conditioner.embedders.0/1.*; "
            f"SD3: {UNET_PREFIX}joint_blocks.*)"
        )
    return found[0]


def _config_from_metadata(metadata: dict[str, str]) -> ModelConfig | None:
    if CONFIG_METADATA not in metadata:
        return None
    return model_config_from_dict(json.loads(metadata[CONFIG_METADATA]))


def infer_model_config(state: dict[str, torch.Tensor], layout: str, name: str, prediction_type: str | None = None) -> ModelConfig:
    """The config of an original-layout checkpoint from its shapes and the layout facts;
    epsilon or v as given, else as diffusers tells them apart."""
    facts = layout_facts()[layout]
    prediction_type = prediction_type or detected_prediction_type(state)
    vae = infer_vae(state, facts)
    unet = infer_unet(state, facts)
    if prediction_type == "v_prediction" and facts.get("v_sample_size"):
        unet["sample_size"] = facts["v_sample_size"]  # SD 2.x v models draw at 768 px
    if layout == "sd2":
        text = infer_open_clip(state, OPEN_CLIP_PREFIX, facts)
    else:  # a transformers CLIP model: its config is read in _hf_clip_text_encoder
        text = {"width": unet["cross_attention_dim"], "heads": 1, "layers": 1}
    model = {"name": name, "vae": vae, "text_encoder": text, "denoiser": {"kind": UNet.kind, **unet}, "scheduler": dict(facts["scheduler"], prediction_type=prediction_type)}
    return model_config_from_dict(model)


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
    facts = layout_facts()["sd1"]
    weights = bare_clip_names({k[len(HF_CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(HF_CLIP_PREFIX)})
    weights.pop("embeddings.position_ids", None)  # a buffer older files carry
    tokenizer = clip_tokenizer()
    return HFClipTextEncoder(hf_clip_model(weights, tokenizer, facts["text_activation"], facts["text_head_width"]), tokenizer)


# ----------------------------------------------------------------------------- saving


def require_unet(components: Components, what: str) -> None:
    """Stable Diffusion's layouts have a U-Net; another denoiser has no place in them."""
    backbone = backbone_of(components.denoiser)
    if not isinstance(backbone, UNet):
        raise ModelError(f"{what} holds a U-Net; this model's denoiser is {backbone.described}")


def original_state(components: Components) -> dict[str, torch.Tensor]:
    """All weights under their original Stable Diffusion names."""
    if is_sd3_model(components):
        return sd3_original_state(components)
    require_unet(components, "an original-layout single file")
    if len(components.text_encoders) > 1:
        return sdxl_original_state(components)
    if is_refiner(components):
        return refiner_original_state(components)
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
