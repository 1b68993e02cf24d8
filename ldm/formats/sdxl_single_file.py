"""SDXL single files in the original layout (Stability's generative-models; what AUTOMATIC1111
and ComfyUI keep): read them into the same Components an SDXL diffusers folder gives, and
write any SDXL model back in that layout.

    conditioner.embedders.0.transformer.text_model.*  CLIP ViT-L, transformers' names
    conditioner.embedders.1.model.*                   OpenCLIP bigG, open_clip's names (ldm.formats.open_clip_layout)
    model.diffusion_model.*                           the U-Net; its size embedding is label_emb (ldm.formats.original_layout)
    first_stage_model.*                               the VAE

The architecture is read from the shapes; heads, norm groups and the schedule are the `sdxl`
facts of ldm/formats/layouts/stable_diffusion.yaml. A refiner (embedders.0 is bigG, no CLIP
ViT-L) is read as a refiner only (ldm.formats.sdxl_refiner_file).
"""

from __future__ import annotations

import torch

from ldm.config import SchedulerConfig, VAEConfig
from ldm.diffusion.schedule import scheduler_config
from ldm.formats.open_clip_layout import open_clip_to_transformers, transformers_to_open_clip
from ldm.formats.original_layout import UNET_PREFIX, unet_from_original, unet_to_original, vae_from_original, vae_to_original
from ldm.formats.original_shapes import bare_clip_names, hf_clip_model, indices, infer_unet, infer_vae, layout_facts
from ldm.models.autoencoder import build_vae
from ldm.models.clip_tokenizer import clip_tokenizer
from ldm.models.components import Components
from ldm.models.text_conditioner import TextConditioner, concatenated
from ldm.models.text_encoder import HFClipTextEncoder
from ldm.models.weights import ModelError, load_state

CLIP_PREFIX = "conditioner.embedders.0.transformer."
OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."
SIZE_IDS = 6  # original height and width, crop top and left, target height and width
CLIP_BUFFERS = ("embeddings.position_ids",)  # carried by some files, not weights


def is_sdxl_state(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(CLIP_PREFIX) for k in state) and any(k.startswith(OPEN_CLIP_PREFIX) for k in state)


def sdxl_components(state: dict[str, torch.Tensor], name: str, prediction_type: str | None = None) -> Components:
    """An SDXL base model from its original-layout weights (KeyError where a part is missing)."""
    from diffusers import UNet2DConditionModel

    facts = layout_facts()["sdxl"]
    first, second = _text_encoders(state, facts)
    pooled_width = second.model.config.projection_dim
    unet = UNet2DConditionModel(**sdxl_unet_config(state, facts, pooled_width))
    load_state(unet, unet_from_original(state, unet.config), "U-Net")
    vae = build_vae(VAEConfig(**infer_vae(state, facts), sample_size=facts["vae_sample_size"]))
    load_state(vae, vae_from_original(state, vae.config), "VAE")
    schedule = SchedulerConfig(**dict(facts["scheduler"], prediction_type=prediction_type or facts["scheduler"]["prediction_type"]))
    return Components(
        vae=vae,
        conditioner=TextConditioner([first, second], concatenated, zeros_for_empty_negative=facts["zeros_for_empty_prompt"]),
        denoiser=unet,
        scheduler_config=scheduler_config(schedule),
        config=None,  # transformers text models, as an SDXL diffusers folder's
        name=name,
    )


def _text_encoders(state, facts) -> tuple[HFClipTextEncoder, HFClipTextEncoder]:
    """Both encoders condition through their penultimate layer; the CLIP BPE tokenizer (as
    SDXL's tokenizer folders: the second pads with "!") comes from open_clip, offline."""
    clip = bare_clip_names({k[len(CLIP_PREFIX) :]: v for k, v in state.items() if k.startswith(CLIP_PREFIX)})
    clip = {k: v for k, v in clip.items() if k not in CLIP_BUFFERS}
    clip.pop("text_projection.weight", None)  # the first encoder's pooled output is not used
    tokenizer = clip_tokenizer()
    first = hf_clip_model(clip, tokenizer, facts["text_activations"][0], facts["text_head_width"])
    return HFClipTextEncoder(first, tokenizer, layer="penultimate"), big_g_encoder(state, OPEN_CLIP_PREFIX, facts)


def big_g_encoder(state, prefix: str, facts) -> HFClipTextEncoder:
    """OpenCLIP bigG under open_clip's names at `prefix` as a projected transformers CLIP model
    (its tokenizer pads with "!", as SDXL's tokenizer_2), conditioning through its penultimate layer."""
    tokenizer = clip_tokenizer(pad_token="!")
    big_g = open_clip_to_transformers({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    model = hf_clip_model(big_g, tokenizer, facts["text_activations"][1], facts["text_head_width"])
    return HFClipTextEncoder(model, tokenizer, layer="penultimate")


def sdxl_unet_config(state, facts, pooled_width: int, time_ids: int = SIZE_IDS) -> dict:
    """UNet2DConditionModel's arguments: the SD U-Net's as read from the shapes, the
    transformer depth of each level, and the text_time embedding (pooled text + `time_ids`
    numbers: a base's 6 size ids, a refiner's 5 with the aesthetic score)."""
    config = infer_unet(state, facts)
    per_level = config["layers_per_block"] + 1
    first_blocks = [1 + level * per_level for level in range(len(config["block_out_channels"]))]
    depths = [len(indices(state, UNET_PREFIX + f"input_blocks.{b}.1.transformer_blocks.")) or 1 for b in first_blocks]
    if config["down_block_types"][-1] == "DownBlock2D":  # diffusers gives the mid block the last level's depth (a refiner's)
        depths[-1] = len(indices(state, UNET_PREFIX + "middle_block.1.transformer_blocks.")) or 1
    label_inputs = state[UNET_PREFIX + "label_emb.0.0.weight"].shape[1]  # the time ids' embeddings + the pooled text
    if (label_inputs - pooled_width) % time_ids:
        raise ModelError(f"its U-Net's size embedding reads {label_inputs - pooled_width} numbers beside the pooled text, not {time_ids} time ids' worth")
    return {
        **config,
        "transformer_layers_per_block": depths,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": (label_inputs - pooled_width) // time_ids,
        "projection_class_embeddings_input_dim": label_inputs,
    }


def sdxl_original_state(components: Components) -> dict[str, torch.Tensor]:
    """An SDXL model's weights under their original names."""
    first, second = sdxl_text_models(components)
    state = unet_to_original(components.denoiser.state_dict(), components.denoiser.config)
    state.update(vae_to_original(components.vae.state_dict(), components.vae.config))
    state.update({f"{CLIP_PREFIX}text_model.{k}": v for k, v in bare_clip_names(first.state_dict()).items()})
    state.update(big_g_original(second, OPEN_CLIP_PREFIX))
    return state


def big_g_original(model, prefix: str) -> dict[str, torch.Tensor]:
    """A projected transformers CLIP model's weights under open_clip's names at `prefix`."""
    return {prefix + k: v for k, v in transformers_to_open_clip(bare_clip_names(model.state_dict())).items()}


def sdxl_text_models(components: Components):
    """The two transformers CLIP models of an SDXL-shaped text side (the second projected)."""
    encoders = components.text_encoders
    models = [getattr(encoder, "model", None) for encoder in encoders]
    shaped = (
        len(encoders) == 2
        and all(isinstance(e, HFClipTextEncoder) and e.layer == "penultimate" for e in encoders)
        and hasattr(models[1], "text_projection")
        and getattr(components.denoiser.config, "addition_embed_type", None) == "text_time"
    )
    if not shaped:
        raise ModelError("this model's text side has no place in the SDXL layout (two CLIP text models, penultimate layers, the second projected)")
    return models
