"""SDXL diffusers folders (StableDiffusionXLPipeline's layout): the text side of two CLIPs.

text_encoder (CLIPTextModel, OpenAI ViT-L) and text_encoder_2 (CLIPTextModelWithProjection,
OpenCLIP bigG), each with its tokenizer; both condition through their penultimate layer,
concatenated along the width, and the second's projected pooled output is the pooled vector
the U-Net's `text_time` embedding reads beside the size conditioning. The U-Net and the VAE
load as Stable Diffusion's do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from ldm.models.text_conditioner import TextConditioner, concatenated
from ldm.models.text_encoder import HFClipTextEncoder
from ldm.models.weights import ModelError

SECOND_ENCODER = ("text_encoder_2", "tokenizer_2")


def is_sdxl_folder(path: Path) -> bool:
    """Whether the diffusers folder has SDXL's second text encoder."""
    return (path / SECOND_ENCODER[0]).is_dir()


def check_sdxl_base(path: Path) -> None:
    """Refuses SDXL folders this project does not drive yet (a refiner: one text encoder, aesthetic scores)."""
    if is_sdxl_folder(path) and not (path / "text_encoder").is_dir():
        raise ModelError(f"{path} is an SDXL refiner (no text_encoder/); refiners are not supported yet")


def sdxl_text_side(path: Path, first_model, first_tokenizer, **options) -> Optional[TextConditioner]:
    """The two-encoder text side of an SDXL folder (the first encoder already read); None for other folders."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    if not is_sdxl_folder(path):
        return None
    second_model = CLIPTextModelWithProjection.from_pretrained(path / SECOND_ENCODER[0], **options)
    second_tokenizer = CLIPTokenizer.from_pretrained(path / SECOND_ENCODER[1], local_files_only=True)
    encoders = [
        HFClipTextEncoder(first_model, first_tokenizer, layer="penultimate"),
        HFClipTextEncoder(second_model, second_tokenizer, layer="penultimate"),
    ]
    return TextConditioner(encoders, concatenated, zeros_for_empty_negative=_zeros_for_empty_prompt(path))


def _zeros_for_empty_prompt(path: Path) -> bool:
    """model_index.json's force_zeros_for_empty_prompt (diffusers' default: true)."""
    index = json.loads((path / "model_index.json").read_text())
    return bool(index.get("force_zeros_for_empty_prompt", True))
