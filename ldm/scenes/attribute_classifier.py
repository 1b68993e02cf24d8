"""A small CNN that reads scene attributes off an image: one classification head per attribute.

It is the judge of the quality evaluation, so it learns only from real scenes
(`ldm.scenes.generator.make_scene`), never from a model's outputs. Images go in as the
project's pixel tensors, (B, 3, H, W) in [-1, 1], at any size; they are resized to
`input_size` first.

Weights live in one safetensors file whose metadata carries the config (and so the label
names) plus how it was trained and how accurate it was on fresh scenes:

    classifier = load_classifier(DEFAULT_CLASSIFIER_PATH)
    labels, features = classifier.predict(pixels)   # labels[i]["time_of_day"] == "dusk"
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldm.models.weights import load_state
from ldm.scenes.judge_files import read_judge, save_judge
from ldm.scenes.generator import MAX_TREES, POSITIONS, SETTINGS, TIMES_OF_DAY, SceneAttributes

DEFAULT_CLASSIFIER_PATH = Path(__file__).parent / "weights" / "scene_attributes.safetensors"
FORMAT = "ldm-attribute-classifier/1"

NO_YES = ("no", "yes")
# attribute -> its class names; index k of a head's logits is HEADS[name][k].
HEADS: dict[str, tuple[str, ...]] = {
    "time_of_day": TIMES_OF_DAY,
    "setting": SETTINGS,
    "mountains": NO_YES,
    "trees": tuple(str(count) for count in range(MAX_TREES + 1)),
    "celestial": ("none", "sun", "moon"),
    "celestial_position": ("none", *POSITIONS),
    "clouds": NO_YES,
    "house": NO_YES,
}
# Heads for the concepts a LoRA can teach (ldm.scenes.generator.CONCEPTS): a judge trained with
# `train_attribute_classifier.py --concept windmill` has them too; the shipped judge has not.
CONCEPT_HEADS: dict[str, tuple[str, ...]] = {"windmill": NO_YES}


def scene_labels(attrs: SceneAttributes) -> dict[str, str]:
    """The class name of every head for a scene: what a perfect classifier would say."""
    return {
        "time_of_day": attrs.time_of_day,
        "setting": attrs.setting,
        "mountains": NO_YES[attrs.mountains],
        "trees": str(attrs.trees),
        "celestial": attrs.celestial or "none",
        "celestial_position": attrs.celestial_position or "none",
        "clouds": NO_YES[attrs.clouds],
        "house": NO_YES[attrs.house],
        "windmill": NO_YES[attrs.windmill],
    }


def label_indices(attrs: SceneAttributes, heads: dict[str, tuple[str, ...]] = HEADS) -> list[int]:
    """Class indices in head order, for a training target row."""
    labels = scene_labels(attrs)
    return [names.index(labels[head]) for head, names in heads.items()]


@dataclass(frozen=True)
class ClassifierConfig:
    input_size: int = 64  # 128 px scenes are halved: enough to count trees and place the sun
    # (channels, convolutions) per stage; each stage halves the resolution. Few convolutions
    # where the maps are large, as that is where CPU time goes.
    stages: tuple[tuple[int, int], ...] = ((16, 1), (32, 1), (64, 2), (96, 2))
    # The last feature map is pooled to this (rows, columns) grid rather than to one cell,
    # so left / center / right (sun, moon) and sky / ground survive the pooling.
    pooled_grid: tuple[int, int] = (2, 3)
    hidden: int = 128  # the penultimate features, also used to measure diversity
    heads: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(HEADS))

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ClassifierConfig":
        data = json.loads(text)
        return cls(
            input_size=data["input_size"],
            stages=tuple(tuple(stage) for stage in data["stages"]),
            pooled_grid=tuple(data["pooled_grid"]),
            hidden=data["hidden"],
            heads={name: tuple(names) for name, names in data["heads"].items()},
        )


def _stage(in_channels: int, out_channels: int, convolutions: int) -> nn.Sequential:
    """A stride-2 3x3 conv, then `convolutions - 1` more at the new resolution."""
    layers = []
    for k in range(convolutions):
        source = in_channels if k == 0 else out_channels
        layers += [
            nn.Conv2d(source, out_channels, 3, stride=2 if k == 0 else 1, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class AttributeClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig = ClassifierConfig()):
        super().__init__()
        self.config = config
        widths = (3, *(channels for channels, _ in config.stages))
        self.stages = nn.Sequential(
            *(_stage(a, b, convolutions) for a, b, (_, convolutions) in zip(widths, widths[1:], config.stages))
        )
        rows, columns = config.pooled_grid
        self.embed = nn.Sequential(
            nn.Flatten(),
            nn.Linear(widths[-1] * rows * columns, config.hidden),
            nn.ReLU(inplace=True),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(config.hidden, len(names)) for name, names in config.heads.items()})
        self.metadata: dict = {}  # training record and accuracy, filled by load_classifier

    def resize(self, pixels: torch.Tensor) -> torch.Tensor:
        size = self.config.input_size
        if pixels.shape[-2:] == (size, size):
            return pixels
        return F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> penultimate features (B, hidden)."""
        x = self.stages(self.resize(pixels))  # (B, C, size/16, size/16)
        return self.embed(F.adaptive_avg_pool2d(x, self.config.pooled_grid))

    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head, each (B, number of classes)."""
        features = self.features(pixels)
        return {name: head(features) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, batch_size: int = 64) -> tuple[list[dict[str, str]], torch.Tensor]:
        """Class names per image and the penultimate features (B, hidden), in eval mode."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        labels, features = [], []
        for batch in pixels.split(batch_size):
            feats = self.features(batch.to(device=device, dtype=torch.float32))
            best = {name: head(feats).argmax(dim=1).tolist() for name, head in self.heads.items()}
            names = self.config.heads
            labels += [{head: names[head][best[head][i]] for head in names} for i in range(len(batch))]
            features.append(feats.cpu())
        self.train(was_training)
        return labels, torch.cat(features)


# ----------------------------------------------------------------------------- files


def save_classifier(model: AttributeClassifier, path: str | Path, record: dict | None = None) -> None:
    """Weights + config in one safetensors file; `record` (training settings, accuracy) goes
    into its metadata as JSON."""
    save_judge(model, path, FORMAT, model.config.to_json(), record)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> AttributeClassifier:
    """The classifier in `path`, in eval mode; raises ModelError with a one-line reason."""
    state, config, record = read_judge(path, FORMAT, "an attribute classifier")
    model = AttributeClassifier(ClassifierConfig.from_json(config))
    load_state(model, state, "attribute classifier")
    model.metadata = record
    return model.to(device).eval()
