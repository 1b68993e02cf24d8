"""Training data, augmentation and the training loop of the attribute classifier.

The data are real scenes only (split "all", so every (setting, time of day) pair,
held-out ones included: the judge must know them all), from dataset seeds reserved in
`ldm.scenes.seeds`, rendered once and kept in memory at the classifier's input size.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ldm.scenes.generator import make_scene, scene_seed, shows_concept
from ldm.scenes.attribute_classifier import AttributeClassifier, label_indices

CHUNK = 256  # scenes converted to tensors at a time, so full-size renders never pile up


def _render(job: tuple[int, int, int, dict, str | None, float]):
    dataset_seed, index, size, heads, concept, share = job
    shown = concept if concept and shows_concept(dataset_seed, index, share) else None
    image, attrs = make_scene(scene_seed(dataset_seed, index), size, "all", shown)
    return np.asarray(image), label_indices(attrs, heads)


def render_scenes(
    model: AttributeClassifier,
    n: int,
    dataset_seed: int,
    size: int = 128,
    workers: int = 1,
    progress: Callable | None = None,
    concept: str | None = None,
    concept_share: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` real scenes drawn at `size`, resized the way `model` resizes its input.

    Returns uint8 images (n, 3, input_size, input_size) and class indices (n, number of heads).
    `progress` wraps the iterator of rendered scenes (e.g. tqdm) if given. With `concept`, that
    share of the scenes also shows the concept (ldm.scenes.generator.CONCEPTS).
    """
    jobs = [(dataset_seed, index, size, model.config.heads, concept, concept_share) for index in range(n)]
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        rendered = pool.imap(_render, jobs, chunksize=16) if pool else map(_render, jobs)
        if progress:
            rendered = progress(rendered)
        images, labels, chunk = [], [], []
        for array, indices in rendered:
            chunk.append(array)
            labels.append(indices)
            if len(chunk) == CHUNK:
                images.append(_to_input(model, chunk))
                chunk = []
        if chunk:
            images.append(_to_input(model, chunk))
    finally:
        if pool:
            pool.close()
    return torch.cat(images), torch.tensor(labels, dtype=torch.long)


def _to_input(model: AttributeClassifier, arrays: list[np.ndarray]) -> torch.Tensor:
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, size, size)
    with torch.no_grad():
        small = model.resize(pixels)  # (B, 3, input_size, input_size)
    return ((small.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def to_pixels(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float in [-1, 1]."""
    return images.float() / 127.5 - 1


# ----------------------------------------------------------------------------- augmentation


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random colour jitter, blur and noise on (B, 3, H, W) pixels in [-1, 1].

    Why: the classifier judges generated images, which come out of a VAE decoder a little
    soft, a little noisy and a little off in colour compared with the crisp renders it
    learns from. Trained on crisp renders only, it could lean on render-exact cues (one-pixel
    stars, hard edges) that a good generation lacks, and mark it wrong. The jitter is kept
    small so it never changes what a scene shows: a colour shift large enough could turn
    dusk into dawn.
    """
    b = pixels.shape[0]

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, *shape, generator=generator)

    mean = pixels.mean(dim=(1, 2, 3), keepdim=True)
    x = (pixels - mean) * uniform(0.9, 1.1, 1, 1, 1) + mean  # contrast
    x = x + uniform(-0.06, 0.06, 1, 1, 1)  # brightness
    x = (x + 1) * uniform(0.96, 1.04, 3, 1, 1) - 1  # per-channel gain: a slight colour cast
    blurred = torch.rand(b, generator=generator) < 0.5
    sigma = torch.where(blurred, uniform(0.3, 0.9), torch.zeros(b))
    x = gaussian_blur(x, sigma)
    x = x + uniform(0.0, 0.04, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return x.clamp(-1, 1)


def gaussian_blur(pixels: torch.Tensor, sigma: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Blur image i with its own `sigma[i]` (pixels; 0 leaves it as it is), separably."""
    b, c, h, w = pixels.shape
    offsets = torch.arange(-radius, radius + 1, dtype=pixels.dtype)
    safe = sigma.clamp(min=1e-3)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None, :] / safe) ** 2)  # (B, K)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = kernel.repeat_interleave(c, dim=0)  # (B*C, K): one kernel per image channel
    x = F.pad(pixels.reshape(1, b * c, h, w), (radius,) * 4, mode="replicate")
    x = F.conv2d(x, kernel[:, None, None, :], groups=b * c)  # along rows
    x = F.conv2d(x, kernel[:, None, :, None], groups=b * c)  # along columns
    return x.reshape(b, c, h, w)


# ----------------------------------------------------------------------------- training


def fit(
    model: torch.nn.Module,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    steps: int,
    generator: torch.Generator,
    batch_size: int,
    lr: float,
    weight_decay: float = 1e-4,
    progress: Callable | None = None,
) -> list[float]:
    """The judges' training loop: AdamW on a one-cycle schedule; each step draws `batch_size`
    of the `n` examples (indices, by `generator`) and minimises `batch_loss(indices)`.
    Returns every step's loss; `progress` wraps range(steps)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    losses = []
    steps_iter = progress(range(steps)) if progress else range(steps)
    for _ in steps_iter:
        loss = batch_loss(torch.randint(n, (batch_size,), generator=generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if hasattr(steps_iter, "set_postfix") and len(losses) % 20 == 0:
            steps_iter.set_postfix(loss=f"{sum(losses[-20:]) / 20:.3f}")
    model.eval()
    return losses


def train_classifier(
    model: AttributeClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    progress: Callable | None = None,
) -> list[float]:
    """Trains `model` in place on augmented batches of (uint8 `images`, `labels`); returns the
    loss (sum of the heads' cross-entropies) of every step. `progress` wraps range(steps)."""
    device = next(model.parameters()).device

    def batch_loss(pick: torch.Tensor) -> torch.Tensor:
        logits = model(augment(to_pixels(images[pick]), generator).to(device))
        targets = labels[pick].to(device)
        return sum(F.cross_entropy(out, targets[:, k]) for k, out in enumerate(logits.values()))

    return fit(model, batch_loss, len(images), steps, generator, batch_size, lr, weight_decay, progress)


@torch.no_grad()
def accuracy_per_head(
    model: AttributeClassifier, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
) -> dict[str, float]:
    """Fraction right per head on uint8 `images`; augmented first when a generator is given."""
    model.eval()
    device = next(model.parameters()).device
    right = torch.zeros(len(model.config.heads))
    for batch, targets in zip(images.split(256), labels.split(256)):
        pixels = to_pixels(batch)
        if generator is not None:
            pixels = augment(pixels, generator)
        logits = model(pixels.to(device))
        for k, out in enumerate(logits.values()):
            right[k] += (out.argmax(dim=1).cpu() == targets[:, k]).sum()
    return {name: right[k].item() / len(images) for k, name in enumerate(model.config.heads)}


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
