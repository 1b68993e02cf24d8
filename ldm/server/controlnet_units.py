"""ControlNet units as AUTOMATIC1111's ControlNet extension sends them, read into our ControlUnits:

    {"alwayson_scripts": {"controlnet": {"args": [
        {"image": b64, "module": "canny", "model": "edges", "weight": 1.0,
         "guidance_start": 0, "guidance_end": 1, "enabled": true}, ...]}}}

Values are checked with the other settings (ldm.control.units.check_control_units); here only
what is A1111's own spelling: module and model names, the image field, `enabled`.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from PIL import Image

from ldm.control.library import ControlNets
from ldm.control.units import CONTROL_TYPES, ControlUnit
from ldm.server.codec import decode_image
from ldm.settings import GenerationError

# The extension's module (preprocessor) names -> our control types; ours are accepted too.
A1111_MODULES = {"none": "raw", "canny": "canny"}
MODULES = {**A1111_MODULES, **{name: name for name in CONTROL_TYPES}}
# What GET /controlnet/module_list offers: the extension's names where it has one.
MODULE_LIST = ["none", "canny", "layout"]

# A1111 lists ControlNets as "name [hash]"; clients send them back that way.
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]+\]\s*$")


def control_units(
    scripts: Any, controlnets: ControlNets, max_pixels: int, init_image: Optional[Image.Image] = None
) -> tuple[ControlUnit, ...]:
    """The enabled units of `alwayson_scripts` (the request's field; None: none). A unit without
    an image (none, or "") uses `init_image` (img2img), as the extension does. GenerationError
    names the unit."""
    if scripts is None:
        return ()
    if not isinstance(scripts, dict):
        raise GenerationError("alwayson_scripts must be an object")
    controlnet = scripts.get("controlnet") or scripts.get("ControlNet")
    if controlnet is None:
        return ()
    args = controlnet.get("args") if isinstance(controlnet, dict) else None
    if not isinstance(args, list):
        raise GenerationError("alwayson_scripts.controlnet.args must be a list of units")
    units = []
    for k, unit in enumerate(args):
        where = f"controlnet unit {k}"
        if not isinstance(unit, dict):
            raise GenerationError(f"{where} must be an object")
        if unit.get("enabled", True) is False:
            continue
        units.append(_unit(unit, where, controlnets, max_pixels, init_image))
    return tuple(units)


def _unit(unit: dict, where: str, controlnets: ControlNets, max_pixels: int, init_image) -> ControlUnit:
    module = str(unit.get("module") or "none").lower()
    if module not in MODULES:
        raise GenerationError(f"{where}: unknown module {module!r}; known modules: {', '.join(MODULES)}")
    return ControlUnit(
        image=_image(unit, where, max_pixels, init_image),
        type=MODULES[module],
        scale=_number(unit, "weight", 1.0, where),
        start=_number(unit, "guidance_start", 0.0, where),
        end=_number(unit, "guidance_end", 1.0, where),
        model=controlnet_name(unit.get("model"), controlnets),
    )


def _image(unit: dict, where: str, max_pixels: int, init_image) -> Image.Image:
    # "image" is a base64 string, or {"image": b64, "mask": ...}; older clients send "input_image".
    # None, or "" (what the webuiapi client sends for a unit without a picture of its own), is the
    # img2img picture, as in the extension.
    value = unit.get("image")
    if value is None or value == "":
        value = unit.get("input_image")
    if isinstance(value, dict):
        value = value.get("image")
    if value is None or value == "":
        if init_image is None:
            raise GenerationError(
                f"{where}: no image: give one in 'image' (only img2img can leave it empty, for its input picture)"
            )
        return init_image
    return decode_image(value, f"{where} image", max_pixels)


def _number(unit: dict, key: str, default: float, where: str) -> float:
    value = unit.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenerationError(f"{where}: {key} must be a number, got {value!r}")
    return float(value)


def controlnet_name(name: Any, controlnets: ControlNets) -> Optional[str]:
    """Our ControlNet for A1111's model name: None ("None", or none given) lets the pipeline take
    the one made for the unit's type; a name of ours (with or without A1111's " [hash]") is that
    one; a name from another install ("control_v11p_sd15_canny [d14c016b]") is ours of the type
    it names, when exactly one fits."""
    if name is None or str(name).strip().lower() in ("", "none"):
        return None
    bare = _HASH_SUFFIX.sub("", str(name))
    names = [entry.name for entry in controlnets.entries]
    if bare in names:
        return bare
    words = set(re.split(r"[^a-z0-9]+", bare.lower()))
    fits = [entry.name for entry in controlnets.entries if entry.type in words]
    if len(fits) == 1:
        return fits[0]
    raise GenerationError(f"no ControlNet named {bare!r}; {controlnets.inventory()}")


def model_list(controlnets: ControlNets) -> list[str]:
    return [entry.name for entry in controlnets.entries]
