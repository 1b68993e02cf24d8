"""A tiny random SD3 diffusers folder shaped as an SD3 single file's keys assume (the `sd3`
facts of ldm/formats/layouts/stable_diffusion.yaml: 64-wide attention heads in the MMDiT and
both CLIPs, quick_gelu then gelu, CLIP-L's identity projection, 32 norm groups in the VAE,
SD3's latent factors and shift 3, CLIP's own tokenizers), so a file written from it reads back
alone as the same model. Optionally with a tiny T5 as wide as the joint attention."""

from __future__ import annotations

from pathlib import Path

import torch
from sd3_folder import LATENT_CHANNELS, tiny_t5

CLIP_WIDTHS = (64, 128)  # 1 and 2 heads of 64
JOINT_WIDTH = 256  # wider than both CLIPs side by side (192)
MMDIT_HEADS = 2  # of 64: a 128-wide MMDiT


def _clip(tokenizer, width: int, activation: str):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=3,
        num_attention_heads=width // 64, max_position_embeddings=77, hidden_act=activation, projection_dim=width,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return CLIPTextModelWithProjection(config).eval()


def sd3_shaped_parts(path: Path, t5: bool = False) -> dict:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    from ldm.models.clip_tokenizer import clip_tokenizer

    tokenizers = clip_tokenizer(), clip_tokenizer(pad_token="!")  # SD3's: the second pads with "!"
    torch.manual_seed(0)
    encoders = [_clip(tok, width, act) for tok, width, act in zip(tokenizers, CLIP_WIDTHS, ("quick_gelu", "gelu"))]
    with torch.no_grad():
        encoders[0].text_projection.weight.copy_(torch.eye(CLIP_WIDTHS[0]))  # CLIP-L's pooled output, unprojected
    transformer = SD3Transformer2DModel(
        sample_size=128, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=2,
        attention_head_dim=64, num_attention_heads=MMDIT_HEADS, joint_attention_dim=JOINT_WIDTH,
        caption_projection_dim=64 * MMDIT_HEADS, pooled_projection_dim=sum(CLIP_WIDTHS), pos_embed_max_size=32,
    ).eval()  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(32, 32), in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=1024, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
    ).eval()  # fmt: skip
    tokenizer_3, text_encoder_3 = tiny_t5(path, JOINT_WIDTH) if t5 else (None, None)
    return dict(transformer=transformer, vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                tokenizer=tokenizers[0], tokenizer_2=tokenizers[1], text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))  # fmt: skip


def write_sd3_shaped_folder(path: Path, t5: bool = False) -> Path:
    from diffusers import StableDiffusion3Pipeline

    folder = path / ("sd3-shaped-t5" if t5 else "sd3-shaped")
    StableDiffusion3Pipeline(**sd3_shaped_parts(path, t5)).save_pretrained(folder, safe_serialization=True)
    return folder
