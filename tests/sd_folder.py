"""A diffusers-format Stable Diffusion folder from tiny random parts, written offline.

CLIPTokenizer needs vocab.json and merges.txt; a byte-level vocabulary with no merges is
enough to tokenize any text (one token per character)."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _byte_vocab() -> dict[str, int]:
    # The printable stand-ins CLIP's byte-level BPE uses for the 256 byte values.
    visible = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        chars.append(chr(byte) if byte in visible else chr(256 + extra))
        extra += byte not in visible
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def tiny_clip(components, path: Path, text_heads: int = 2):
    """A transformers CLIP tokenizer (written under `path`) and a random text model as wide as
    the denoiser's cross-attention."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = _byte_vocab()
    tokenizer_dir = path / "_tokenizer_src"
    tokenizer_dir.mkdir(parents=True)
    (tokenizer_dir / "vocab.json").write_text(json.dumps(vocab))
    (tokenizer_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=components.denoiser.config.cross_attention_dim,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=text_heads,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    ).eval()
    return tokenizer, text_encoder


def write_tiny_sd_folder(components, path: Path, text_heads: int = 2) -> Path:
    from diffusers import StableDiffusionPipeline

    from ldm.diffusion.samplers import make_sampler

    tokenizer, text_encoder = tiny_clip(components, path, text_heads)
    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=components.denoiser,
        scheduler=make_sampler("ddim", components.scheduler_config).scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = path / "sd-tiny"
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def write_tiny_upscaler_folder(components, path: Path) -> Path:
    """A diffusers StableDiffusionUpscalePipeline folder from tiny upscaler components (a
    3-level VAE, a 7-channel U-Net with class labels; tests/tiny.py), with a CLIP text model
    and ddim as its scheduler."""
    from reference import upscale_pipeline

    tokenizer, text_encoder = tiny_clip(components, path)
    folder = path / "x4-upscaler-tiny"
    upscale_pipeline(components, "ddim", text_encoder, tokenizer).save_pretrained(folder, safe_serialization=True)
    return folder
