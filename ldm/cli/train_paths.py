"""The paths a training config names, checked in the YAML as read (before the typed config,
whose modules import torch): a mistyped data.path or init_from is told at once, not after
~10 s of imports or a model load. Values of the wrong type are left to the typed config,
which names them."""

from __future__ import annotations

import glob
from pathlib import Path

from ldm.builtin_models import UnknownModelError, resolve_model
from ldm.cli.common import UsageError
from ldm.files import recover_folder

DEFAULT_STAGE = "text2img"  # ldm.training.config.TrainConfig.stage
# The keys each stage reads a model from: a model folder, a single file or a built-in name.
MODEL_KEYS = {stage: (f"{stage}.init_from",) for stage in ("text2img", "inpaint", "controlnet", "lcm", "lora", "upscaler")}
# The keys each stage reads one part of a model from: a folder (an earlier stage's export).
PART_KEYS = {stage: (f"{stage}.vae_from", f"{stage}.text_encoder_from") for stage in ("text2img", "upscaler")}
# Data sources whose data.path is a local file, folder or glob (webdataset's may be a URL or a command).
LOCAL_SOURCES = ("imagefolder", "hf")


def value(data: dict, key: str):
    """data['a']['b'] for 'a.b'; None when a section or the key is missing or not text."""
    section, name = key.split(".")
    found = data.get(section, {})
    found = found.get(name) if isinstance(found, dict) else None
    return found if isinstance(found, str) and found else None


def check_config_paths(data: dict) -> None:
    """UsageError naming the first key whose path is not there."""
    stage = data.get("stage", DEFAULT_STAGE)
    for key in MODEL_KEYS.get(stage, ()):
        path = value(data, key)
        if path is not None:
            try:
                resolve_model(path)
            except UnknownModelError as error:
                raise UsageError(f"{key}: {error}") from None
    for key in PART_KEYS.get(stage, ()):
        path = value(data, key)
        if path is not None and not recover_folder(Path(path)).is_dir():  # a save killed mid-swap left it aside
            raise UsageError(f"{key}: {path} is not a folder")
    source = data.get("data", {}).get("source", "imagefolder") if isinstance(data.get("data"), dict) else None
    path = value(data, "data.path")
    if source in LOCAL_SOURCES and path is not None and not (Path(path).exists() or glob.glob(path, recursive=True)):
        raise UsageError(f"data.path does not exist: {path}")
    exclude = value(data, "data.exclude")
    if exclude is not None and not Path(exclude).is_file():
        raise UsageError(f"data.exclude is not a file: {exclude}")
