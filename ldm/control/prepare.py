"""From a request's control units to what the denoiser runs: each unit's ControlNet (loaded
on first use), its picture at the working size, through its preprocessor, as a tensor."""

from __future__ import annotations

from typing import Sequence

from PIL import Image

from ldm.control.denoiser import ActiveControl, control_tensor
from ldm.control.library import ControlNets
from ldm.control.preprocessors import control_image
from ldm.control.sd3 import control_latents, is_sd3_controlnet
from ldm.control.units import ControlUnit


def active_controls(
    controlnets: ControlNets, units: Sequence[ControlUnit], size: tuple[int, int], device, dtype, notes: list[str], vae=None
) -> list[ActiveControl]:
    """One ActiveControl per unit at `size` (width, height); a resize is noted in `notes`.
    An SD3 ControlNet's control image is encoded by the model's `vae`."""
    active = []
    for k, unit in enumerate(units):
        net = controlnets.serving(unit).load(device, dtype)
        if unit.image.size != tuple(size):
            note = "control image {} {}x{} resized to {}x{}".format(k, *unit.image.size, *size)
            if note not in notes:
                notes.append(note)
        image = control_input(unit.type, unit.image, size)  # (1, 3, H, W) in [0, 1]
        if is_sd3_controlnet(net.config):
            image = control_latents(vae, net.config, image)  # (1, C, h, w)
        active.append(ActiveControl(net, image, unit.scale, unit.start, unit.end))
    return active


def control_map(control_type: str, picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The control image the ControlNet reads, at `size`: the picture resized before the
    preprocessor runs, so that edges and region borders stay crisp."""
    picture = picture.convert("RGB")
    if picture.size != tuple(size):
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return control_image(control_type, picture)


def control_input(control_type: str, picture: Image.Image, size: tuple[int, int]):
    return control_tensor(control_map(control_type, picture, size), size)  # (1, 3, H, W) in [0, 1]


def crop_controls(units: Sequence[ControlUnit], canvas_size: tuple[int, int], box) -> tuple[ControlUnit, ...]:
    """Inpainting a crop of the canvas (or an outpainted canvas): each control image is taken
    to cover the whole canvas and cut to the region that is inpainted."""
    from dataclasses import replace

    def region(image: Image.Image) -> Image.Image:
        if image.size != tuple(canvas_size):
            image = image.resize(canvas_size, Image.Resampling.LANCZOS)
        return image.crop(box)

    return tuple(replace(unit, image=region(unit.image)) for unit in units)
