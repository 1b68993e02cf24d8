"""The `parameters` PNG text chunk in the layout AUTOMATIC1111's web UI writes and the
tools around it (image browsers, metadata readers) parse:

    a lake at dawn
    Negative prompt: blurry
    Steps: 20, Sampler: dpm++2m, CFG scale: 7.5, Seed: 7, Size: 128x128, Model: scenes
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from PIL import PngImagePlugin

NEGATIVE_PREFIX = "Negative prompt: "


@dataclass
class GenerationParameters:
    prompt: str
    negative_prompt: str
    steps: int
    sampler: str
    cfg_scale: float
    seed: int
    width: int
    height: int
    model: str
    extra: dict | None = None  # further "Key: value" pairs (e.g. Denoising strength)

    def to_text(self) -> str:
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(NEGATIVE_PREFIX + self.negative_prompt)
        fields = {
            "Steps": self.steps,
            "Sampler": self.sampler,
            "CFG scale": f"{self.cfg_scale:g}",
            "Seed": self.seed,
            "Size": f"{self.width}x{self.height}",
            "Model": self.model,
            **(self.extra or {}),
        }
        lines.append(", ".join(f"{key}: {value}" for key, value in fields.items()))
        return "\n".join(lines)

    def png_info(self) -> PngImagePlugin.PngInfo:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", self.to_text())
        return info


def edit_fields(strength: float, mask_blur: float | None = None, crop_padding: int | None = None, pad=None) -> dict:
    """The img2img / inpainting settings under the names AUTOMATIC1111 gives them (the
    outpainting pad has none there: ours, space-separated so that no comma splits it)."""
    fields = {"Denoising strength": f"{strength:g}"}
    if mask_blur is not None:
        fields["Mask blur"] = f"{mask_blur:g}"
    if crop_padding is not None:
        fields.update({"Inpaint area": "Only masked", "Masked area padding": crop_padding})
    if pad is not None:
        fields["Outpaint padding"] = " ".join(map(str, pad))
    return fields


_FIELD = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)')


def parse_parameters(text: str) -> dict:
    """The inverse of `to_text`: {'prompt', 'negative_prompt', 'Steps', 'Seed', ...} as strings."""
    lines = text.strip().split("\n")
    settings = lines.pop() if lines and _FIELD.match(lines[-1]) and "Steps:" in lines[-1] else ""
    prompt_lines, negative_lines, target = [], [], None
    for line in lines:
        if line.startswith(NEGATIVE_PREFIX):
            target = negative_lines
            line = line[len(NEGATIVE_PREFIX):]
        (target if target is not None else prompt_lines).append(line)
    result = {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines)}
    for key, value in _FIELD.findall(settings):
        result[key.strip()] = value.strip()
    return result
