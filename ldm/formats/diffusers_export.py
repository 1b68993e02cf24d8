"""Export of a fine-tuned diffusers-format Stable Diffusion folder: the source folder with
its denoiser (the U-Net) replaced (safetensors), so `ldm-generate --model` and diffusers
both read it."""

from __future__ import annotations

import shutil
from pathlib import Path

from ldm.diffusion.backbones import backbone_of
from ldm.formats.model_folder import staged_folder


def is_diffusers_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def save_diffusers_finetune(denoiser, source: Path, path: Path) -> Path:
    backbone = backbone_of(denoiser)
    folder = backbone.diffusers_folder  # the denoiser's subfolder in the pipeline folder
    with staged_folder(path, is_diffusers_folder, "diffusers model folder") as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(folder))
        backbone.inner.save_pretrained(staging / folder, safe_serialization=True)
    return path
