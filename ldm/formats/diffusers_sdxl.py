"""SDXL diffusers folders (StableDiffusionXLPipeline's layout): the text side of two CLIPs.

text_encoder (CLIPTextModel, OpenAI ViT-L) and text_encoder_2 (CLIPTextModelWithProjection,
OpenCLIP bigG), each with its tokenizer; both condition through their penultimate layer,
concatenated along the width, and the second's projected pooled output is the pooled vector
the U-Net's `text_time` embedding reads beside the size conditioning. The U-Net and the VAE
load as Stable Diffusion's do.

An SDXL refiner's folder has the second encoder alone (no text_encoder/): its penultimate layer
is the context, its pooled projection the pooled vector, and its U-Net reads five time ids
(original size, crop, aesthetic score: ldm.pipeline.refiner). It loads only as a refiner."""

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


def is_sdxl_refiner_folder(path: Path) -> bool:
    """An SDXL folder with the second text encoder only: a refiner's."""
    return is_sdxl_folder(path) and not (path / "text_encoder").is_dir()


def check_sdxl_role(path: Path, refiner: bool) -> None:
    """A refiner folder loads only as a refiner (`refiner`), and only a refiner's does; one line otherwise."""
    if refiner and not is_sdxl_refiner_folder(path):
        raise ModelError(f"{path} is not an SDXL refiner (a diffusers folder with text_encoder_2/ and no text_encoder/)")
    if not refiner and is_sdxl_refiner_folder(path):
        raise ModelError(f"{path} is an SDXL refiner (no text_encoder/): give it with --refiner, beside an SDXL base model")


def sdxl_text_side(path: Path, first_model, first_tokenizer, **options) -> Optional[TextConditioner]:
    """The two-encoder text side of an SDXL folder (the first encoder already read); None for other folders."""
    if not is_sdxl_folder(path):
        return None
    encoders = [HFClipTextEncoder(first_model, first_tokenizer, layer="penultimate"), projected_clip(path, SECOND_ENCODER, **options)]
    return TextConditioner(encoders, concatenated, zeros_for_empty_negative=_zeros_for_empty_prompt(path))


def refiner_text_side(path: Path, **options) -> TextConditioner:
    """A refiner's text side: OpenCLIP bigG alone, its penultimate layer and pooled projection."""
    return TextConditioner([projected_clip(path, SECOND_ENCODER, **options)], zeros_for_empty_negative=_zeros_for_empty_prompt(path))


def projected_clip(path: Path, folders: tuple[str, str], **options) -> HFClipTextEncoder:
    """A CLIPTextModelWithProjection and its tokenizer from `folders` (encoder, tokenizer) of a
    diffusers folder, conditioning through its penultimate layer."""
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    model = CLIPTextModelWithProjection.from_pretrained(path / folders[0], **options)
    tokenizer = CLIPTokenizer.from_pretrained(path / folders[1], local_files_only=True)
    return HFClipTextEncoder(model, tokenizer, layer="penultimate")


def _zeros_for_empty_prompt(path: Path) -> bool:
    """model_index.json's force_zeros_for_empty_prompt (diffusers' default: true)."""
    index = json.loads((path / "model_index.json").read_text())
    return bool(index.get("force_zeros_for_empty_prompt", True))
