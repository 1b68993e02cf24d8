"""A tiny random SDXL diffusers folder (StableDiffusionXLPipeline's layout), written offline:
a text_time U-Net, two CLIP text models (the second with a projection), both tokenizers.

The SDXL-shaped variant (SDXL_SHAPED) is narrow but follows what an SDXL single file's shapes
do not tell (ldm/formats/layouts/stable_diffusion.yaml: 64-wide attention heads, 32 norm
groups, gelu in the second encoder) and tokenizes with CLIP's own vocabulary, as single files do."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from sd_folder import tiny_clip

TEXT_WIDTHS = (32, 48)  # the cross-attention width is their sum
PROJECTION = 24  # the second encoder's pooled width
TIME_EMBED = 8  # per size number; six of them
TINY = dict(text_widths=TEXT_WIDTHS, text_heads=(2, 2), activations=("quick_gelu",) * 2, unet_channels=(16, 32),
            unet_heads=(2, 4), groups=4, vae_channels=(8, 16), vae_sample=32, unet_sample=16)  # fmt: skip
SDXL_SHAPED = dict(text_widths=(64, 128), text_heads=(1, 2), activations=("quick_gelu", "gelu"), unet_channels=(64, 128),
                   unet_heads=(1, 2), groups=32, vae_channels=(32, 32), vae_sample=1024, unet_sample=128)  # fmt: skip

SDXL_SCHEDULER_EXTRAS = {"clip_sample": False, "set_alpha_to_one": False, "sample_max_value": 1.0, "skip_prk_steps": True}


def _text_config(tokenizer, width: int, heads: int, activation: str, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=heads, max_position_embeddings=77, hidden_act=activation, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **extra,
    )  # fmt: skip


def _tokenizers(path: Path, shape: dict):
    if shape is SDXL_SHAPED:  # CLIP's BPE; SDXL's second tokenizer pads with "!"
        from ldm.models.clip_tokenizer import clip_tokenizer

        return clip_tokenizer(), clip_tokenizer(pad_token="!")

    class Shim:  # tiny_clip reads the cross-attention width from the denoiser
        denoiser = type("D", (), {"config": type("C", (), {"cross_attention_dim": TEXT_WIDTHS[0]})})

    tokenizer, _ = tiny_clip(Shim, path)
    return tokenizer, tokenizer


def tiny_sdxl_parts(path: Path, shape: dict = TINY) -> dict:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = _tokenizers(path, shape)
    widths, heads, activations = shape["text_widths"], shape["text_heads"], shape["activations"]
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(tokenizer, widths[0], heads[0], activations[0])).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, widths[1], heads[1], activations[1], projection_dim=PROJECTION)).eval()
    unet = UNet2DConditionModel(
        sample_size=shape["unet_sample"], in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=shape["unet_channels"],
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=shape["unet_heads"], norm_num_groups=shape["groups"], use_linear_projection=True,
        transformer_layers_per_block=(1, 2), cross_attention_dim=sum(widths), addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED, projection_class_embeddings_input_dim=6 * TIME_EMBED + PROJECTION,
    ).eval()  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=shape["vae_channels"], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=shape["groups"],
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=shape["vae_sample"], scaling_factor=0.13025, force_upcast=True,
    ).eval()  # fmt: skip
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, timestep_spacing="leading")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler)  # fmt: skip


def write_tiny_sdxl_folder(path: Path, shape: dict = TINY) -> Path:
    from diffusers import StableDiffusionXLPipeline

    folder = path / ("sdxl-tiny" if shape is TINY else "sdxl-shaped")
    StableDiffusionXLPipeline(**tiny_sdxl_parts(path, shape)).save_pretrained(folder, safe_serialization=True)
    if shape is SDXL_SHAPED:  # SDXL base's scheduler file, which says more than EulerDiscreteScheduler's arguments
        config = folder / "scheduler" / "scheduler_config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), **SDXL_SCHEDULER_EXTRAS}))
    return folder


# The refiner's U-Net: the tiny one, or an SDXL-refiner-like one (levels without attention at
# both ends, the mid block as deep as the attention levels: transformer_layers_per_block for all).
REFINER_UNETS = {
    "tiny": dict(sample_size=16, block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), norm_num_groups=4),
    "shaped": dict(sample_size=128, block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(1, 1, 1), norm_num_groups=32,
                   transformer_layers_per_block=2),
}  # fmt: skip


def write_tiny_refiner_folder(path: Path, shape: dict = TINY) -> Path:
    """A tiny SDXL refiner (StableDiffusionXLImg2ImgPipeline's layout as the refiner ships it):
    the second text encoder alone, a U-Net reading five time ids (size, crop, aesthetic score),
    the base's VAE and schedule, an empty negative prompt encoded as it is. With SDXL_SHAPED,
    what a single file does not tell is SDXL's (as write_tiny_sdxl_folder's)."""
    from diffusers import StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextModelWithProjection

    parts = path / "refiner-parts"  # the base's VAE, tokenizer and schedule again (the same seed)
    parts.mkdir(exist_ok=True)
    base = tiny_sdxl_parts(parts, shape)
    torch.manual_seed(1)
    width, heads, activation = shape["text_widths"][1], shape["text_heads"][1], shape["activations"][1]
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(base["tokenizer_2"], width, heads, activation, projection_dim=PROJECTION)).eval()
    unet = UNet2DConditionModel(
        in_channels=4, out_channels=4, layers_per_block=1, use_linear_projection=True, cross_attention_dim=width,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED, projection_class_embeddings_input_dim=5 * TIME_EMBED + PROJECTION,
        **REFINER_UNETS["tiny" if shape is TINY else "shaped"],
    ).eval()  # fmt: skip
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=base["vae"], text_encoder=None, text_encoder_2=text_encoder_2, tokenizer=None, tokenizer_2=base["tokenizer_2"],
        unet=unet, scheduler=base["scheduler"], requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
    )  # fmt: skip
    folder = path / ("sdxl-refiner-tiny" if shape is TINY else "sdxl-refiner-shaped")
    refiner.save_pretrained(folder, safe_serialization=True)
    return folder
