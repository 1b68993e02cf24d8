"""ControlNet networks: built from a model's own U-Net (diffusers ControlNetModel.from_unet:
a trainable copy of its encoder, joined through zero-initialised convolutions), and
ControlNet folders: diffusers' layout (config.json + diffusion_pytorch_model.safetensors)
plus control.json, which records the control type it was trained for. Folders are written
atomically and read offline, safetensors only; a plain diffusers ControlNet folder (an SD
1.x, SDXL or SD3 user's: ControlNetModel or SD3ControlNetModel) loads too, with no recorded type."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional

import torch

from ldm.control.sd3 import SD3_CLASS
from ldm.files import recover_folder
from ldm.formats.model_folder import ModelError, refuse_pickle, staged_folder

CONTROL_FILE = "control.json"
CONFIG_FILE = "config.json"  # diffusers' name


def controlnet_from_unet(unet, vae_scale: int, latent_channels: int = 4):
    """A ControlNet for `unet`; its control-image embedding downsamples pixels by the VAE's
    `vae_scale` (8 for KL-f8), so that it lands on the latent grid. It reads the
    `latent_channels` latents only: an inpainting U-Net's mask channels are not its input
    (as diffusers' ControlNet inpainting pipeline feeds it)."""
    from diffusers import ControlNetModel

    stages = int(math.log2(vae_scale)) + 1
    channels = tuple(16 * 2**k for k in range(stages))  # (16, 32, 64, 128) for KL-f8
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels)
    if net.config.in_channels != latent_channels:
        old = net.conv_in
        narrow = torch.nn.Conv2d(latent_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
        with torch.no_grad():
            narrow.weight.copy_(old.weight[:, :latent_channels])  # (out, C, k, k): the latents' part
            narrow.bias.copy_(old.bias)
        net.conv_in = narrow.to(old.weight)
        net.register_to_config(in_channels=latent_channels)
    return net


def is_controlnet_folder(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def save_controlnet(controlnet, control_type: Optional[str], path: str | Path) -> Path:
    """Writes a ControlNet folder atomically: a crash leaves the old folder (or none). A
    control type of None writes a plain diffusers folder (no control.json)."""
    path = Path(path)
    with staged_folder(path, is_controlnet_folder, "ControlNet folder") as staging:
        controlnet.save_pretrained(staging, safe_serialization=True)
        if control_type is not None:
            (staging / CONTROL_FILE).write_text(json.dumps({"type": control_type}) + "\n")
    return path


def control_type_of(path: Path) -> Optional[str]:
    """The control type a folder records; None for a plain diffusers ControlNet folder."""
    file = path / CONTROL_FILE
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())["type"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ModelError(f"{file} is not a JSON object with a 'type'") from None


# The ControlNet classes a folder's config.json may name (_class_name); none named: ControlNetModel.
CONTROLNET_CLASSES = ("ControlNetModel", SD3_CLASS)


def controlnet_class(path: Path):
    """The diffusers class of the ControlNet folder `path`, by its config.json's _class_name."""
    import diffusers

    try:
        name = json.loads((path / CONFIG_FILE).read_text()).get("_class_name") or CONTROLNET_CLASSES[0]
    except (json.JSONDecodeError, AttributeError):
        raise ModelError(f"{path / CONFIG_FILE} is not a JSON object") from None
    if name not in CONTROLNET_CLASSES:
        raise ModelError(f"{path} holds a {name}; ControlNets here are {' or '.join(CONTROLNET_CLASSES)}")
    return getattr(diffusers, name)


# diffusers' words for a weight whose shape is not the one its config.json gives
WRONG_SHAPE = re.compile(r"(\S+) expected shape (torch\.Size\(\[[\d, ]*\]\)), but got (torch\.Size\(\[[\d, ]*\]\))")


def load_failure(error: Exception) -> str:
    """One line saying why diffusers could not load a folder; a weight of the wrong shape
    is told without diffusers' advice (options of from_pretrained a user does not call)."""
    wrong = WRONG_SHAPE.search(str(error))
    if wrong:
        return "its weights do not fit its config.json ({} is {}, the config makes it {})".format(*wrong.group(1, 3, 2))
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def load_controlnet(path: str | Path, device=None, dtype: Optional[torch.dtype] = None):
    """A ControlNetModel (or SD3ControlNetModel) from a folder, offline, from safetensors only."""
    path = recover_folder(path)
    if path.is_file():
        refuse_pickle(path)
        raise ModelError(f"{path} is a file; a ControlNet is a folder with {CONFIG_FILE} and .safetensors weights")
    if not is_controlnet_folder(path):
        raise ModelError(f"{path} is not a ControlNet folder: it has no {CONFIG_FILE}")
    if not any(path.glob("*.safetensors")):
        pickled = [p for p in path.iterdir() if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
        if pickled:
            refuse_pickle(pickled[0])
        raise ModelError(f"{path} has no .safetensors weights")
    try:
        model = controlnet_class(path).from_pretrained(path, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, json.JSONDecodeError) as error:
        raise ModelError(f"cannot read ControlNet folder {path}: {load_failure(error)}") from None
    # Only a dtype that changes something: diffusers warns on every dtype cast.
    cast = {"dtype": dtype} if dtype not in (None, next(model.parameters()).dtype) else {}
    return model.to(device=device, **cast).eval().requires_grad_(False)
