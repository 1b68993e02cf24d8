"""Training data and loop of the layout segmenter: real scenes with the exact region map
they were drawn with (split "all", from dataset seeds reserved in ldm.scenes.seeds), kept in
memory as uint8; batches get the attribute judge's augmentation (colour, blur, noise), since
it judges a VAE's slightly soft, slightly off renders."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ldm.scenes.classifier_training import augment, fit, to_pixels
from ldm.scenes.control_metrics import RegionIoU
from ldm.scenes.draw import draw_scene_with_layout
from ldm.scenes.generator import scene_attributes, scene_seed
from ldm.scenes.layout_segmenter import LayoutSegmenter


def render_layouts(n: int, dataset_seed: int, size: int = 128, progress: Callable | None = None):
    """`n` scenes and their region maps: uint8 (n, 3, size, size) and int64 (n, size, size)."""
    indices = progress(range(n)) if progress else range(n)
    images, labels = [], []
    for index in indices:
        seed = scene_seed(dataset_seed, index)
        image, regions = draw_scene_with_layout(scene_attributes(seed, "all"), seed, size)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))  # (3, H, W) uint8, a writable copy
        labels.append(torch.from_numpy(regions.astype(np.int64)))
    return torch.stack(images), torch.stack(labels)


def train_segmenter(
    model: LayoutSegmenter,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    batch_size: int = 32,
    lr: float = 3e-3,
    progress: Callable | None = None,
) -> list[float]:
    """Trains `model` in place (per-pixel cross-entropy); returns every step's loss."""

    def batch_loss(pick: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(augment(to_pixels(images[pick]), generator)), labels[pick])

    return fit(model, batch_loss, len(images), steps, generator, batch_size, lr, progress=progress)


def segmenter_miou(model: LayoutSegmenter, images: torch.Tensor, labels: torch.Tensor, generator=None) -> float:
    """The regions' mean IoU over all the images (RegionIoU); augmented first when a generator is given."""
    pixels = to_pixels(images)
    if generator is not None:
        pixels = augment(pixels, generator)
    score = RegionIoU(len(model.config.regions))
    for predicted, truth in zip(model.predict(pixels).numpy(), labels.numpy()):
        score.add(predicted, truth)
    return score.mean()
