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

    def add_notes_and_timings(self, other: "GenerationResult", prefix: str = "") -> None:
        """`other`'s notes (those not told yet) and timings (added up, named `prefix` + name):
        a result made of several runs (an upscale's tiles, a generation then its upscale)."""
        self.notes += [note for note in other.notes if note not in self.notes]
        for name, seconds in other.timings.items():
            self.timings[prefix + name] = self.timings.get(prefix + name, 0.0) + seconds
