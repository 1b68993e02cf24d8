"""The one list of backbones, and the lookups into it: for a module, a config section, a
diffusers class name or folder. Nothing outside this package compares class names or kinds."""

from __future__ import annotations

import json
from pathlib import Path

from ldm.diffusion.backbones.base import Backbone
from ldm.diffusion.backbones.mmdit import MMDiT
from ldm.diffusion.backbones.pixart import PixArt
from ldm.diffusion.backbones.unet import UNet
from ldm.errors import LdmError

BACKBONES: tuple[type[Backbone], ...] = (UNet, PixArt, MMDiT)


class UnknownBackbone(LdmError, TypeError):
    """A module, section or name that no backbone adapter drives."""


def backbone_of(model) -> Backbone:
    """The adapter for a denoiser module (also one wrapped by torch.compile); an adapter is
    returned as it is (a ControlNet-steered one, say)."""
    if isinstance(model, Backbone):
        return model
    module = getattr(model, "_orig_mod", model)  # torch.compile's wrapper: the module it runs
    adapter = backbone_for_class(type(module).__name__, f"not a known denoiser: {type(module).__name__}")
    return adapter(model)


def backbone_for_class(name: str, message: str = "") -> type[Backbone]:
    """The adapter driving the diffusers class `name` (as model_index.json names it)."""
    for adapter in BACKBONES:
        if adapter.diffusers_class == name:
            return adapter
    raise UnknownBackbone(message or f"no backbone drives diffusers' {name}; known: {_known('diffusers_class')}")


def backbone_for_config(section) -> type[Backbone]:
    """The adapter whose config section `section` (ModelConfig.denoiser) is."""
    for adapter in BACKBONES:
        if isinstance(section, adapter.config_section):
            return adapter
    raise UnknownBackbone(f"no backbone is configured by a {type(section).__name__}")


def backbone_in_diffusers_folder(path: Path) -> type[Backbone]:
    """The backbone whose subfolder a diffusers pipeline folder has (`unet/`, `transformer/`),
    told apart by the class its config.json names where several share a subfolder (PixArt's
    and SD3's `transformer/`); the first one (Stable Diffusion's U-Net) when it has none, so
    that the error names it."""
    found = [adapter for adapter in BACKBONES if (path / adapter.diffusers_folder).is_dir()]
    for adapter in found:
        if _saved_class(path / adapter.diffusers_folder) in (None, adapter.diffusers_class):
            return adapter
    if found:
        folder = found[0].diffusers_folder
        raise UnknownBackbone(f"{path / folder} holds a {_saved_class(path / folder)}; known: {_known('diffusers_class')}")
    return BACKBONES[0]


def _saved_class(folder: Path):
    """The class a diffusers model folder's config.json names, or None without one."""
    try:
        return json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None


def _known(attribute: str) -> str:
    return ", ".join(getattr(adapter, attribute) for adapter in BACKBONES)
