"""Export of a fine-tuned diffusers-format Stable Diffusion folder: the source folder with
its U-Net replaced (safetensors), so `ldm-generate --model` and diffusers both read it."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def save_diffusers_finetune(unet, source: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("unet"))
        unet.save_pretrained(staging / "unet", safe_serialization=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path
