"""What a generation call returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from ldm.png_info import ImageParameters


@dataclass
class GenerationResult:
    images: list[Image.Image]
    parameters: list[ImageParameters] = field(default_factory=list)  # one per image
    timings: dict[str, float] = field(default_factory=dict)  # seconds: text, encode, sampling, decode
    notes: list[str] = field(default_factory=list)  # worth telling the user: an input resized, a prompt cut

    @property
    def seeds(self) -> list[int]:
        return [p.seed for p in self.parameters]
