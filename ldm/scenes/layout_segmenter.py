"""A small fully-convolutional network that names the region (ldm.control.layout_map.REGIONS)
under each pixel of a scene: the judge of how closely a picture follows a layout map.

Like the attribute judge it learns from real scenes only (ldm.scenes.draw's exact layouts,
ldm.scenes.segmenter_training), never from a model's outputs. Weights live in one
safetensors file whose metadata carries the config and how it was trained and scored:

    segmenter = load_segmenter(DEFAULT_SEGMENTER_PATH)
    labels = segmenter.predict(pixels)   # (B, H, W) region indices; pixels (B, 3, H, W) in [-1, 1]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldm.control.layout_map import REGIONS
from ldm.models.weights import load_state
from ldm.scenes.judge_files import read_judge, save_judge

DEFAULT_SEGMENTER_PATH = Path(__file__).parent / "weights" / "layout_segmenter.safetensors"
FORMAT = "ldm-layout-segmenter/1"


@dataclass(frozen=True)
class SegmenterConfig:
    width: int = 16  # channels at the input size; x2 and x4 at the two coarser levels
    input_size: int = 64  # pictures are read at this size (cheap on a CPU); labels come back at theirs
    regions: tuple[str, ...] = field(default=REGIONS)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "SegmenterConfig":
        values = json.loads(text)
        return cls(width=int(values["width"]), input_size=int(values["input_size"]), regions=tuple(values["regions"]))


def _block(channels_in: int, channels_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=dilation, dilation=dilation),
        nn.GroupNorm(8, channels_out),
        nn.SiLU(),
        nn.Conv2d(channels_out, channels_out, 3, padding=1),
        nn.GroupNorm(8, channels_out),
        nn.SiLU(),
    )


class LayoutSegmenter(nn.Module):
    """Full (the input size), 1/2 and 1/4 resolution levels; dilated convolutions at 1/4 see the whole sky or
    lake (colours alone are ambiguous at night); skips keep region borders sharp."""

    def __init__(self, config: SegmenterConfig = SegmenterConfig()):
        super().__init__()
        self.config = config
        w = config.width
        self.at_full = _block(3, w)
        self.at_half = _block(w, 2 * w, stride=2)
        self.at_quarter = nn.Sequential(_block(2 * w, 4 * w, stride=2), _block(4 * w, 4 * w, dilation=2), _block(4 * w, 4 * w, dilation=4))
        self.up_half = _block(4 * w + 2 * w, 2 * w)
        self.up_full = _block(2 * w + w, w)
        self.head = nn.Conv2d(w, len(config.regions), 1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, regions, H, W) logits."""
        size = self.config.input_size
        full = self.at_full(F.interpolate(pixels, size=(size, size), mode="area") if pixels.shape[-1] != size else pixels)
        half = self.at_half(full)
        quarter = self.at_quarter(half)
        up = self.up_half(torch.cat([F.interpolate(quarter, size=half.shape[-2:], mode="nearest"), half], 1))
        up = self.up_full(torch.cat([F.interpolate(up, size=full.shape[-2:], mode="nearest"), full], 1))
        return F.interpolate(self.head(up), size=pixels.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """(B, H, W) region indices (int64, on the CPU), in eval mode."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        labels = [self(batch.to(device=device, dtype=torch.float32)).argmax(1).cpu() for batch in pixels.split(batch_size)]
        self.train(was_training)
        return torch.cat(labels)


def save_segmenter(model: LayoutSegmenter, path: str | Path, record: dict | None = None) -> None:
    """Weights + config in one safetensors file; `record` (training settings, scores) goes
    into its metadata as JSON."""
    save_judge(model, path, FORMAT, model.config.to_json(), record)


def load_segmenter(path: str | Path, device: torch.device | str = "cpu") -> LayoutSegmenter:
    """The segmenter in `path`, in eval mode; raises ModelError with a one-line reason."""
    state, config, record = read_judge(path, FORMAT, "a layout segmenter")
    model = LayoutSegmenter(SegmenterConfig.from_json(config))
    load_state(model, state, "layout segmenter")
    model.metadata = record
    return model.to(device).eval()
