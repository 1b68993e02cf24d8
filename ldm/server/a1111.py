"""AUTOMATIC1111's /sdapi/v1 request and response JSON <-> our Settings and results.

The request fields come from ldm.settings: every Settings field that declares its A1111 name
(`api`) is a field of the request, so a new setting reaches the HTTP API without an edit
here. Only A1111's own spellings of what we express differently are handled by hand: seed -1,
sampler + scheduler names, batch_size x n_iter, the inpainting area and the input images.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, create_model

from ldm.control.library import ControlNets
from ldm.server.codec import decode_image, mask_image, png_base64
from ldm.server.controlnet_units import control_units
from ldm.server.loras import check_prompt_loras
from ldm.server.refiners import refiner_fields
from ldm.server.samplers import OURS_TO_A1111, sampler_from_a1111
from ldm.settings import DEFAULT_STRENGTH, HIRES_FIELDS, GenerationError, Limits, Settings, check_input_size, check_settings, fields_of, option_of

# A1111's defaults where they differ from ours and clients rely on them.
A1111_STRENGTH = DEFAULT_STRENGTH["img2img"]  # 0.75 for img2img and inpainting alike
A1111_MASK_PADDING = 32  # inpaint_full_res_padding
A1111_HR_SCALE = 2.0  # hr_scale, when enable_hr is true


# Bounds checked when the request is read (422 naming the field): values that pass the settings'
# own checks but no model can use. A cfg_scale of 1e308 is finite, and then overflows the images
# into NaN; A1111's slider stops at 30, ComfyUI's at 100.
MAX_CFG_SCALE = 100.0
REQUEST_BOUNDS = {"cfg_scale": {"ge": 0, "le": MAX_CFG_SCALE, "allow_inf_nan": False}}


def _settings_fields(mode: str) -> dict[str, Any]:
    """Request fields for the settings `mode` takes, typed and documented as in Settings."""
    hints = typing.get_type_hints(Settings)
    fields = {}
    for each in fields_of(mode):
        spec = option_of(each)
        if spec.api is not None:
            bounds = REQUEST_BOUNDS.get(spec.api, {})
            fields[spec.api] = (Optional[hints[each.name]], Field(None, description=spec.help, **bounds))
    return fields


_OPEN = ConfigDict(extra="allow")  # A1111 clients send many fields we do not use
_COMMON = {
    "sampler_index": (Optional[str], Field(None, description="older clients' name for sampler_name")),
    "scheduler": (Optional[str], Field(None, description="A1111 >= 1.9: 'Automatic' or 'Karras'")),
    "n_iter": (Optional[int], Field(None, description="batches of batch_size images, one after another")),
    "alwayson_scripts": (Optional[dict], Field(None, description="ControlNet units: {'controlnet': {'args': [unit, ...]}}")),
    "refiner_checkpoint": (Optional[str], Field(None, description="an SDXL refiner among the server's models (its title); '' or 'None': no refiner")),
}
Txt2ImgRequest: type[BaseModel] = create_model(
    "Txt2ImgRequest",
    __config__=_OPEN,
    **_settings_fields("txt2img"),
    **_COMMON,
    enable_hr=(Optional[bool], Field(None, description="hires fix: without it the hr_* fields and denoising_strength are ignored")),
    hr_resize_x=(Optional[int], Field(None, description="hires fix to this width instead of hr_scale (0: from the height)")),
    hr_resize_y=(Optional[int], Field(None, description="hires fix to this height instead of hr_scale (0: from the width)")),
)
Img2ImgRequest: type[BaseModel] = create_model(
    "Img2ImgRequest",
    __config__=_OPEN,
    **_settings_fields("inpaint"),
    **_COMMON,
    init_images=(list[str], Field(description="one base64 image (a data: URL too)")),
    mask=(Optional[str], Field(None, description="base64 mask: white (or opaque) is repainted")),
    inpainting_mask_invert=(Optional[int], Field(None, description="1: black is repainted")),
    inpaint_full_res=(Optional[bool], Field(None, description="inpaint only the masked area, at full resolution")),
    include_init_images=(Optional[bool], Field(None, description="echo the input images in `parameters`")),
)


class PngInfoRequest(BaseModel):
    image: str = Field(description="base64 PNG")


@dataclass
class Job:
    """One request in our terms: `iterations` runs of `settings` (n = images per run)."""

    mode: str
    settings: Settings
    iterations: int = 1
    image: Optional[Image.Image] = None
    mask: Optional[Image.Image] = None

    def settings_of(self, iteration: int) -> Settings:
        """Image k of the whole job has seed + k, as in A1111 and ldm-generate."""
        return self.settings.replace(seed=self.settings.seed + iteration * self.settings.n)


def job_from_request(
    request: BaseModel,
    limits: Limits,
    controlnets: Optional[ControlNets] = None,
    lora_dir: Optional[str] = None,
    prompt_syntax: Optional[str] = None,
    models: Optional[dict[str, Path]] = None,
) -> Job:
    """Checks a txt2img or img2img request and turns it into a Job; GenerationError names
    the first bad value. ControlNet units' model names are read against `controlnets`; the
    prompt's <lora:NAME:WEIGHT> tags name files in `lora_dir`; a request without its own
    prompt_syntax gets `prompt_syntax` (the server's; None: the model's own); its
    refiner_checkpoint names one of `models` (title -> folder)."""
    body = request.model_dump()
    edit = "init_images" in body
    mode = "txt2img" if not edit else ("inpaint" if body.get("mask") else "img2img")
    given = {}
    for each in fields_of(mode):
        api = option_of(each).api
        if api is not None and body.get(api) is not None:
            given[each.name] = body[api]
    if lora_dir is not None:
        given["lora_dir"] = lora_dir
    refiner_fields(body, given, models)
    if given.get("prompt_syntax") is None and prompt_syntax is not None:
        given["prompt_syntax"] = prompt_syntax
    if given.get("seed") == -1:  # A1111's "random"
        del given["seed"]
    sampler = sampler_from_a1111(body.get("sampler_name") or body.get("sampler_index"), body.get("scheduler"))
    if sampler is not None:
        given["sampler"] = sampler
    image, mask = _input_images(body, mode, limits) if edit else (None, None)
    given["controls"] = control_units(body.get("alwayson_scripts"), controlnets or ControlNets(), limits.max_pixels, image) or None
    check_prompt_loras(given.get("prompt") or "", lora_dir)  # before check_settings: messages without server paths
    if edit and given.get("strength") is None:
        given["strength"] = A1111_STRENGTH
    if not edit:
        _hires_fields(body, given)
    if mode == "inpaint":
        given.pop("crop_to_mask", None)
        if body.get("inpaint_full_res"):
            padding = body.get("inpaint_full_res_padding")
            given["crop_to_mask"] = A1111_MASK_PADDING if padding is None else padding
    per_batch = given.get("batch_size", 1)
    iterations = 1 if body.get("n_iter") is None else body["n_iter"]
    if per_batch < 1 or iterations < 1:
        raise GenerationError(f"batch_size and n_iter must be at least 1, got {per_batch} and {iterations}")
    # Checked as the whole job (all its images and seeds), run as `iterations` runs.
    whole = Settings(**given).replace(n=per_batch * iterations, batch_size=per_batch).with_seed()
    check_settings(whole, mode, limits)
    job = Job(mode, whole.replace(n=per_batch), iterations, image, mask)
    if edit:
        check_input_size(whole, mode, image.size, limits)
    return job


def _hires_fields(body: dict, given: dict) -> None:
    """A1111's hires fix fields, honoured with enable_hr and ignored without (as A1111 does):
    a resize (hr_resize_x/y) wins over hr_scale (default 2); denoising_strength defaults to 0.75."""
    if not body.get("enable_hr"):
        for name in HIRES_FIELDS:
            given.pop(name, None)
        return
    resize = (body.get("hr_resize_x") or 0, body.get("hr_resize_y") or 0)
    if any(resize):
        given["hires_resize"] = resize
        given.pop("hires_scale", None)
    else:
        given.setdefault("hires_scale", A1111_HR_SCALE)
    given.setdefault("hires_strength", A1111_STRENGTH)


def _input_images(body: dict, mode: str, limits: Limits) -> tuple[Image.Image, Optional[Image.Image]]:
    images = body["init_images"]
    if len(images) != 1:
        raise GenerationError(f"init_images must hold one image, got {len(images)}")
    image = decode_image(images[0], "init_images[0]", limits.max_pixels)
    mask = None
    if mode == "inpaint":
        mask = mask_image(decode_image(body["mask"], "mask", limits.max_pixels), bool(body.get("inpainting_mask_invert")))
    return image, mask


def response(request: BaseModel, job: Job, result, model_title: str, interrupted: bool, timestamp: str) -> dict:
    """A1111's answer: base64 PNGs carrying their parameters, the request, and `info` (a JSON string)."""
    parameters = request.model_dump()
    if not parameters.get("include_init_images"):
        parameters.update({"init_images": None, "mask": None} if "init_images" in parameters else {})
    first = result.parameters[0] if result.parameters else None
    settings = job.settings
    used = first.settings if first else settings.with_defaults()
    infotexts = [each.to_text() for each in result.parameters]
    info = {
        "prompt": settings.prompt,
        "all_prompts": [settings.prompt] * len(result.images),
        "negative_prompt": settings.negative,
        "all_negative_prompts": [settings.negative] * len(result.images),
        "seed": settings.seed,
        "all_seeds": result.seeds,
        "subseed": -1,
        "all_subseeds": [-1] * len(result.images),
        "subseed_strength": 0,
        "width": first.width if first else settings.width,
        "height": first.height if first else settings.height,
        # What ran: the model's own defaults fill what the request left out.
        "sampler_name": OURS_TO_A1111[used.sampler],
        "cfg_scale": used.cfg,
        "steps": used.steps,
        "batch_size": settings.n,
        "n_iter": job.iterations,
        "denoising_strength": settings.strength_for(job.mode) if job.mode != "txt2img" else settings.hires_shown("hires_strength"),
        # A1111's extra parameters: the hires fix's, the refiner's and the TI hashes.
        "extra_generation_params": {
            **{key: value for key, value in (first.fields() if first else {}).items() if key.startswith(("Hires", "Refiner"))},
            **(dict(first.extra) if first else {}),
        },
        "sd_model_name": model_title,
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": [],
        "job_timestamp": timestamp,
        "clip_skip": 1,
        "is_using_inpainting_conditioning": job.mode == "inpaint",
        "version": "ldm",
        "interrupted": interrupted,
        "notes": result.notes,
    }
    images = [png_base64(image, each.png_info()) for image, each in zip(result.images, result.parameters, strict=True)]
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}
