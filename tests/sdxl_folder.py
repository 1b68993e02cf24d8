"""A tiny random SDXL diffusers folder (StableDiffusionXLPipeline's layout), written offline:
a text_time U-Net, two CLIP text models (the second with a projection), both tokenizers."""

from __future__ import annotations

from pathlib import Path

import torch
from sd_folder import _byte_vocab, tiny_clip

TEXT_WIDTHS = (32, 48)  # the cross-attention width is their sum
PROJECTION = 24  # the second encoder's pooled width
TIME_EMBED = 8  # per size number; six of them


def _text_config(vocab: dict, width: int, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=width, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"], **extra,
    )  # fmt: skip


def tiny_sdxl_parts(path: Path) -> dict:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    class Shim:  # tiny_clip reads the cross-attention width from the denoiser
        denoiser = type("D", (), {"config": type("C", (), {"cross_attention_dim": TEXT_WIDTHS[0]})})

    tokenizer, _ = tiny_clip(Shim, path)
    vocab = _byte_vocab()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(vocab, TEXT_WIDTHS[0])).eval()
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab, TEXT_WIDTHS[1], projection_dim=PROJECTION)).eval()
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), norm_num_groups=4, use_linear_projection=True, transformer_layers_per_block=(1, 2),
        cross_attention_dim=sum(TEXT_WIDTHS), addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + PROJECTION,
    ).eval()  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=32, scaling_factor=0.13025, force_upcast=True,
    ).eval()  # fmt: skip
    scheduler = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, timestep_spacing="leading")
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler)  # fmt: skip


def write_tiny_sdxl_folder(path: Path) -> Path:
    from diffusers import StableDiffusionXLPipeline

    folder = path / "sdxl-tiny"
    StableDiffusionXLPipeline(**tiny_sdxl_parts(path)).save_pretrained(folder, safe_serialization=True)
    return folder
