"""SD3 / SD3.5 single files in Stability's original layout (what ComfyUI and Forge keep): read
them into the Components an SD3 diffusers folder gives, and write an SD3 model back.

    model.diffusion_model.*                       the MMDiT (ldm.formats.mmdit_layout)
    first_stage_model.*                           the 16-channel VAE (no quant convs)
    text_encoders.clip_l.transformer.*            CLIP ViT-L, transformers' names
    text_encoders.clip_g.transformer.*            OpenCLIP bigG, transformers' names, projected
    text_encoders.t5xxl.transformer.*             optional: T5 (transformers' T5EncoderModel)

Read alone, the architecture comes from the shapes and the `sd3` facts of
ldm/formats/layouts/stable_diffusion.yaml; CLIP-L's pooled output is read unprojected, as
diffusers reads these files (an identity projection). A file whose text encoders are not all
in it (sd3_medium.safetensors holds none), or that holds a T5 (whose tokenizer no file carries),
names a diffusers SD3 folder in a sidecar NAME.yaml (`parts_from: DIR`): as diffusers'
from_single_file(config=DIR), the configs, tokenizers, scheduler and the parts the file lacks
come from that folder, the file's own weights from the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ldm.diffusion.schedule import FLOW_PREDICTION
from ldm.formats.diffusers_sd3 import T5_FOLDERS, JointContext, check_flow_scheduler, has_t5, is_sd3_folder, sd3_text_side
from ldm.formats.mmdit_layout import MMDIT_PREFIX, mmdit_blocks, mmdit_from_original
from ldm.formats.original_layout import VAE_PREFIX, vae_from_original
from ldm.formats.original_shapes import bare_clip_names, hf_clip_model, indices, layout_facts
from ldm.models.clip_tokenizer import clip_tokenizer
from ldm.models.components import Components
from ldm.models.text_conditioner import TextConditioner
from ldm.models.text_encoder import HFClipTextEncoder
from ldm.models.weights import ModelError, load_state

CLIP_L, CLIP_G, T5 = layout_facts()["sd3"]["text_keys"]
SD3_MARK = MMDIT_PREFIX + "joint_blocks."
T5_TIED = "encoder.embed_tokens.weight"  # T5's input embedding: the same tensor as shared.weight


def is_sd3_state(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(SD3_MARK) for k in state)


def part(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def sd3_components(state: dict[str, torch.Tensor], path: Path, parts_from: Path | None) -> Components:
    """An SD3 model from its original-layout weights, alone or completed by `parts_from`."""
    if parts_from is not None:
        return _completed(state, path, parts_from)
    missing = [prefix + "*" for prefix in (CLIP_L, CLIP_G) if not part(state, prefix)]
    if missing or part(state, T5):
        why = f"holds no {' or '.join(missing)}" if missing else "holds a T5 encoder, whose tokenizer no file carries"
        raise ModelError(f"{path} {why}: name a diffusers SD3 folder for the rest in {path.with_suffix('.yaml')} (parts_from: DIR)")
    facts = layout_facts()["sd3"]
    first, second = _clip(state, CLIP_L, 0, facts), _clip(state, CLIP_G, 1, facts)
    denoiser = _mmdit(state, facts)
    return Components(
        vae=_vae(state, facts),
        conditioner=TextConditioner([first, second], JointContext(denoiser.config.joint_attention_dim)),
        denoiser=denoiser,
        scheduler_config={**facts["scheduler"], "prediction_type": FLOW_PREDICTION},
        name=path.stem,
    )


def _clip(state, prefix: str, index: int, facts) -> HFClipTextEncoder:
    """One CLIP from its weights: CLIP's BPE from open_clip, offline (the second pads with "!"
    as SD3's tokenizer_2 does); CLIP-L with the identity projection diffusers gives it."""
    weights = bare_clip_names(part(state, prefix))
    weights.pop("embeddings.position_ids", None)  # a buffer some files carry
    if index == 0:
        width = weights["embeddings.token_embedding.weight"].shape[1]
        weights["text_projection.weight"] = torch.eye(width)
    tokenizer = clip_tokenizer(pad_token="!") if index else clip_tokenizer()
    model = hf_clip_model(weights, tokenizer, facts["text_activations"][index], facts["text_head_width"])
    return HFClipTextEncoder(model, tokenizer, layer="penultimate")


def mmdit_config(state, facts) -> dict:
    """SD3Transformer2DModel's arguments as the shapes tell them (heads from the facts or the qk norms)."""
    inner = part(state, MMDIT_PREFIX)
    width, in_channels, patch, _ = inner["x_embedder.proj.weight"].shape
    qk_norm = inner.get("joint_blocks.0.x_block.attn.ln_q.weight")
    head_width = qk_norm.shape[0] if qk_norm is not None else facts["mmdit_head_width"]
    caption_width, joint_width = inner["context_embedder.weight"].shape
    return {
        "sample_size": facts["sample_size"],
        "patch_size": patch,
        "in_channels": in_channels,
        "out_channels": inner["final_layer.linear.weight"].shape[0] // (patch * patch),
        "num_layers": mmdit_blocks(state),
        "attention_head_dim": head_width,
        "num_attention_heads": width // head_width,
        "joint_attention_dim": joint_width,
        "caption_projection_dim": caption_width,
        "pooled_projection_dim": inner["y_embedder.mlp.0.weight"].shape[1],
        "pos_embed_max_size": round(inner["pos_embed"].shape[1] ** 0.5),
        "dual_attention_layers": tuple(i for i in indices(inner, "joint_blocks.") if f"joint_blocks.{i}.x_block.attn2.qkv.weight" in inner),
        "qk_norm": "rms_norm" if qk_norm is not None else None,
    }


def _mmdit(state, facts):
    from diffusers import SD3Transformer2DModel

    denoiser = SD3Transformer2DModel(**mmdit_config(state, facts))
    load_state(denoiser, mmdit_from_original(state), "MMDiT")
    return denoiser


def vae_config(state, facts) -> dict:
    """AutoencoderKL's arguments for SD3's VAE: 16 latent channels, no quant convs."""
    down = VAE_PREFIX + "encoder.down."
    levels = indices(state, down)
    return {
        "in_channels": state[VAE_PREFIX + "encoder.conv_in.weight"].shape[1],
        "out_channels": state[VAE_PREFIX + "decoder.conv_out.weight"].shape[0],
        "latent_channels": state[VAE_PREFIX + "decoder.conv_in.weight"].shape[1],
        "block_out_channels": tuple(state[f"{down}{i}.block.0.conv1.weight"].shape[0] for i in levels),
        "layers_per_block": len(indices(state, down + "0.block.")),
        "down_block_types": ("DownEncoderBlock2D",) * len(levels),
        "up_block_types": ("UpDecoderBlock2D",) * len(levels),
        "norm_num_groups": facts["norm_num_groups"],
        "sample_size": facts["vae_sample_size"],
        "scaling_factor": facts["vae_scaling_factor"],
        "shift_factor": facts["vae_shift_factor"],
        "use_quant_conv": VAE_PREFIX + "quant_conv.weight" in state,
        "use_post_quant_conv": VAE_PREFIX + "post_quant_conv.weight" in state,
    }


def _vae(state, facts):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**vae_config(state, facts))
    load_state(vae, vae_from_original(state, vae.config), "VAE")
    return vae


# ----------------------------------------------------------------------------- completed by a folder


def _completed(state, path: Path, folder: Path) -> Components:
    """diffusers' from_single_file(path, config=folder): the folder's configs, tokenizers and
    scheduler; the file's weights where it has them, the folder's elsewhere."""
    from diffusers import AutoencoderKL, SD3Transformer2DModel

    if not (folder / "model_index.json").is_file() or not is_sd3_folder(folder):
        raise ModelError(f"{path.with_suffix('.yaml')}: parts_from {folder} is not a diffusers SD3 folder")
    if part(state, T5) and not has_t5(folder):
        raise ModelError(f"{path} holds a T5 encoder but {folder} has no {T5_FOLDERS[0]}/ and {T5_FOLDERS[1]}/ to read it with")
    options = {"local_files_only": True, "use_safetensors": True}
    try:
        denoiser = SD3Transformer2DModel.from_config(SD3Transformer2DModel.load_config(folder / "transformer"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        conditioner = sd3_text_side(folder, denoiser.config.joint_attention_dim, **options)
        scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    except (OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelError(f"cannot read diffusers folder {folder}: {first}") from None
    load_state(denoiser, mmdit_from_original(state), "MMDiT")
    load_state(vae, vae_from_original(state, vae.config), "VAE")
    _replace_text_weights(state, conditioner)
    check_flow_scheduler(folder, scheduler)
    scheduler = {k: v for k, v in scheduler.items() if not k.startswith("_")}
    return Components(vae=vae, conditioner=conditioner, denoiser=denoiser, scheduler_config={**scheduler, "prediction_type": FLOW_PREDICTION},
                      name=path.stem)  # fmt: skip


def _replace_text_weights(state, conditioner: TextConditioner) -> None:
    for prefix, encoder in zip((CLIP_L, CLIP_G, T5), conditioner.encoders):
        weights = part(state, prefix)
        if not weights:
            continue  # the folder's
        if prefix == T5:
            weights.setdefault(T5_TIED, weights["shared.weight"])
        else:
            weights = {k: v for k, v in weights.items() if k != "text_model.embeddings.position_ids"}
            if prefix == CLIP_L:
                weights["text_projection.weight"] = torch.eye(encoder.width)
            weights = _as_model_names(encoder.model, weights)
        load_state(encoder.model, weights, prefix.split(".")[1])


def _as_model_names(model, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIP names as `model` keeps them (with or without the text_model level)."""
    names = model.state_dict().keys()
    return {k if k in names else k.removeprefix("text_model."): v for k, v in weights.items()}
