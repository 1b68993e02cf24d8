"""Export of a fine-tuned diffusers-format Stable Diffusion folder: the source folder with
its denoiser (the U-Net) replaced (safetensors), and any text encoder that changed (merged
LoRAs), so `ldm-generate --model` and diffusers both read it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from ldm.diffusion.backbones import backbone_of
from ldm.formats.model_folder import staged_folder


def is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def save_diffusers_finetune(denoiser, source: Path, path: Path, text_encoders: Optional[dict] = None) -> Path:
    """`text_encoders`: subfolder (text_encoder, text_encoder_2) -> the transformers model to
    write there in place of the source's."""
    backbone = backbone_of(denoiser)
    replaced = {backbone.diffusers_folder: backbone.inner, **(text_encoders or {})}  # subfolder -> its new model
    with staged_folder(path, is_diffusers_folder, "diffusers model folder") as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*replaced))
        for folder, model in replaced.items():
            model.save_pretrained(staging / folder, safe_serialization=True)
    return path
