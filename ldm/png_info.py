"""The `parameters` PNG text chunk in the layout AUTOMATIC1111's web UI writes and the
tools around it (image browsers, metadata readers) parse:

    a lake at dawn
    Negative prompt: blurry
    Steps: 20, Sampler: dpm++2m, CFG scale: 7.5, Seed: 7, Size: 128x128, Model: scenes

A value holding a comma, a colon or a newline is written as a JSON string, as AUTOMATIC1111
quotes it, so that it reads back whole.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from PIL import PngImagePlugin

from ldm.settings import Settings

NEGATIVE_PREFIX = "Negative prompt: "


def quote(value: str) -> str:
    """AUTOMATIC1111's rule: plain unless a comma, colon or newline would split or end it."""
    if not any(mark in value for mark in ",:\n") and not value.startswith('"'):
        return value
    return json.dumps(value, ensure_ascii=False)


def unquote(value: str) -> str:
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


@dataclass(frozen=True)
class ImageParameters:
    """What one image was made with: its settings (with its own seed), mode, model and size."""

    settings: Settings
    mode: str
    model: str
    width: int
    height: int
    extra: dict[str, str] = field(default_factory=dict)  # written after the settings' (a later upscale's)

    @property
    def seed(self) -> int:
        return self.settings.seed

    def fields(self) -> dict[str, str]:
        return {**self.settings.png_fields(self.mode, self.model, self.width, self.height), **self.extra}

    def to_text(self) -> str:
        lines = [self.settings.prompt]
        if self.settings.negative:
            lines.append(NEGATIVE_PREFIX + self.settings.negative)
        lines.append(", ".join(f"{key}: {quote(str(value))}" for key, value in self.fields().items()))
        return "\n".join(lines)

    def png_info(self) -> PngImagePlugin.PngInfo:
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", self.to_text())
        return info


_FIELD = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^"\\])*"|[^,]*)(?:,|$)')


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
        result[key.strip()] = unquote(value.strip())
    return result
