"""A tiny random SD3 diffusers folder (StableDiffusion3Pipeline's layout), written offline: an
MMDiT (SD3Transformer2DModel) over 16 latent channels, a 16-channel VAE with a shift factor,
two CLIP text models with projections (their pooled outputs side by side are the pooled
vector), optionally a tiny T5 encoder (without one, diffusers' pipeline is given
text_encoder_3=None, tokenizer_3=None and model_index.json names neither), and a flow-matching Euler scheduler."""

from __future__ import annotations

from pathlib import Path

import torch
from sdxl_folder import PROJECTION, TEXT_WIDTHS, _text_config, _tokenizers

JOINT_WIDTH = 96  # T5's width: the CLIP contexts (32 + 48) are zero-padded to it
LATENT_CHANNELS = 16


T5_WORDS = ("a", "lake", "at", "dawn", "boat", "cat", "blurry", "ugly", "dog", "red")


def tiny_t5(path: Path, width: int = JOINT_WIDTH):
    """A T5 tokenizer over a few whole words and single letters (its Unigram model given as
    pieces and scores: no sentencepiece file needed; it ends every prompt with </s>, as T5's
    does) and a random T5 encoder as wide as the MMDiT's joint attention."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(f"\u2581{word}", -1.0) for word in T5_WORDS] + [(letter, -5.0) for letter in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = T5Tokenizer(vocab=pieces, extra_ids=0)
    torch.manual_seed(2)
    config = T5Config(vocab_size=len(pieces), d_model=width, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
    return tokenizer, T5EncoderModel(config).eval()


def tiny_sd3_parts(path: Path, shift: float = 3.0, t5: bool = False) -> dict:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
    from transformers import CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = _tokenizers(path, None)
    torch.manual_seed(0)
    encoders = [
        CLIPTextModelWithProjection(_text_config(tok, width, 2, "quick_gelu", projection_dim=PROJECTION)).eval()
        for tok, width in zip((tokenizer, tokenizer_2), TEXT_WIDTHS)
    ]
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=2,
        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=JOINT_WIDTH, caption_projection_dim=32,
        pooled_projection_dim=2 * PROJECTION, pos_embed_max_size=32,
    ).eval()  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=32, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False,
    ).eval()  # fmt: skip
    tokenizer_3, text_encoder_3 = tiny_t5(path) if t5 else (None, None)
    return dict(transformer=transformer, vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                tokenizer=tokenizer, tokenizer_2=tokenizer_2, text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
                scheduler=FlowMatchEulerDiscreteScheduler(shift=shift))  # fmt: skip


def write_tiny_sd3_folder(path: Path, shift: float = 3.0, t5: bool = False) -> Path:
    from diffusers import StableDiffusion3Pipeline

    name = f"sd3-tiny-shift{shift:g}" + ("-t5" if t5 else "")
    parts = path / f"{name}-parts"  # the tokenizer's sources, one set per folder
    parts.mkdir()
    folder = path / name
    StableDiffusion3Pipeline(**tiny_sd3_parts(parts, shift, t5)).save_pretrained(folder, safe_serialization=True)
    return folder
