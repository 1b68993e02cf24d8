"""Aspect-ratio buckets (data.buckets): train each picture at the shape nearest its own instead
of a square crop, the way kohya's scripts, SimpleTuner and NovelAI do.

A bucket is a (width, height) whose sides are multiples of `step` within [min_side, max_side]
and whose area is at most `area`: for each width, the tallest such height, and each bucket's
transpose. A picture goes to the bucket nearest its aspect ratio (in log ratio) among the
buckets that fit inside it, is resized to just cover it and cropped as little as possible (ldm.data.transforms).
Never upscaled, as the square path: a picture smaller than every bucket is skipped and
counted ("too small"). The sizes come from the image headers, read once when the dataset is
built, so that the sampler (ldm.data.batches.BucketBatches) can put only one bucket in a batch.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Union

from ldm.data.config import BucketSettings
from ldm.data.decode import ImageSource, read_size
from ldm.data.errors import DataError

Size = tuple[int, int]  # (width, height) in pixels
VAE_FACTOR = 8  # the SD family's VAEs downsample by 8: default steps are multiples of it
MAX_STEP = 64  # kohya's and SDXL's bucket step


def default_step(resolution: int) -> int:
    """64 at SD scale; for small resolutions the largest power of two up to R/4, at least 8
    (32 px -> 8, 128 px -> 32), so a tiny model still gets a few shapes."""
    step = VAE_FACTOR
    while step * 2 <= min(MAX_STEP, resolution // 4):
        step *= 2
    return step


@dataclass(frozen=True)
class Buckets:
    """The resolved settings and the bucket list, narrow to wide."""

    area: int
    min_side: int
    max_side: int
    step: int
    sizes: tuple[Size, ...]

    def describe(self) -> dict:
        """What decides the training shapes (part of the dataset's description and cache key)."""
        return {"area": self.area, "min_side": self.min_side, "max_side": self.max_side, "step": self.step}

    def assign(self, width: int, height: int) -> Optional[int]:
        """The bucket of a `width` x `height` picture: nearest in log aspect ratio among those
        that fit inside it (ties: the larger); None when none fits (too small)."""
        ratio = math.log(width / height)
        fitting = [i for i, (w, h) in enumerate(self.sizes) if w <= width and h <= height]
        if not fitting:
            return None
        return min(fitting, key=lambda i: (abs(math.log(self.sizes[i][0] / self.sizes[i][1]) - ratio), -self.sizes[i][0] * self.sizes[i][1]))

    def summary(self) -> str:
        w0, h0 = self.sizes[0]
        w1, h1 = self.sizes[-1]
        return f"{len(self.sizes)} buckets from {w0}x{h0} to {w1}x{h1} (area <= {self.area} px, sides {self.min_side}..{self.max_side}, step {self.step})"


def resolve_buckets(setting: Union[bool, BucketSettings, None], resolution: int) -> Optional[Buckets]:
    """data.buckets -> the bucket list (None when off); DataError for settings with no bucket."""
    if setting is None or setting is False:
        return None
    given = setting if isinstance(setting, BucketSettings) else BucketSettings()
    for name in ("area", "min_side", "max_side", "step"):
        value = getattr(given, name)
        if value is not None and value < 1:
            raise DataError(f"data.buckets.{name} must be positive, got {value}")
    step = given.step if given.step is not None else default_step(resolution)
    area = given.area if given.area is not None else resolution * resolution
    min_side = given.min_side if given.min_side is not None else max(step, resolution // 2 // step * step)
    max_side = given.max_side if given.max_side is not None else resolution * 2
    sizes = bucket_sizes(area, min_side, max_side, step)
    if not sizes:
        raise DataError(
            f"data.buckets has no valid bucket: no width x height with sides multiples of {step} in "
            f"[{min_side}, {max_side}] and area <= {area}; lower min_side or raise area"
        )
    return Buckets(area, min_side, max_side, step, sizes)


def bucket_sizes(area: int, min_side: int, max_side: int, step: int) -> tuple[Size, ...]:
    """For each width (a multiple of `step` in range), the tallest height that keeps the area, and
    the transposes; ordered by aspect ratio, narrow to wide."""
    sizes = set()
    for width in range(math.ceil(min_side / step) * step, max_side + 1, step):
        height = min(area // width // step * step, max_side // step * step)
        if height >= min_side:
            sizes.update({(width, height), (height, width)})
    return tuple(sorted(sizes, key=lambda s: (s[0] / s[1], s[0])))


@dataclass
class BucketPlan:
    """Each sample's bucket, decided before training: `of[position]` indexes `buckets.sizes`,
    or is -1 for a sample that is not trained on (`skipped[position]` says why)."""

    buckets: Buckets
    of: list[int]
    skipped: dict[int, str]
    original: Optional[list[Optional[Size]]] = None  # per position, for the crop statistics

    def size_of(self, position: int) -> Size:
        return self.buckets.sizes[self.of[position]]

    def histogram(self) -> dict[Size, int]:
        counts = Counter(self.of)
        return {size: counts[i] for i, size in enumerate(self.buckets.sizes) if counts[i]}

    def histogram_line(self) -> str:
        """'buckets: 24x40 x3, 32x32 x5, 40x24 x2 (10 samples in 3 of 9 buckets; 1 skipped: too small)'."""
        histogram = self.histogram()
        parts = ", ".join(f"{w}x{h} x{n}" for (w, h), n in histogram.items())
        line = f"buckets: {parts} ({sum(histogram.values())} samples in {len(histogram)} of {len(self.buckets.sizes)} buckets"
        if self.skipped:
            reasons = Counter(self.skipped.values())
            line += f"; {len(self.skipped)} skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
        return line + ")"

    def cropped_share(self) -> Optional[float]:
        """The share of the trained pictures' pixels (after resizing to cover) cropped away."""
        if self.original is None:
            return None
        kept = lost = 0.0
        for position, bucket in enumerate(self.of):
            if bucket < 0 or self.original[position] is None:
                continue
            width, height = self.original[position]
            target_w, target_h = self.buckets.sizes[bucket]
            scale = max(target_w / width, target_h / height)
            kept += target_w * target_h
            lost += width * height * scale * scale - target_w * target_h
        return lost / (kept + lost) if kept else None


def plan_buckets(buckets: Buckets, samples: Iterable[tuple[ImageSource, list[str]]]) -> BucketPlan:
    """The plan for `samples` (each position's undecoded image and captions), from the image
    headers: a sample without a caption, an unreadable header or a picture smaller than every
    bucket is left out, with the reason decoding it would give."""
    of, skipped, original = [], {}, []
    for position, (source, captions) in enumerate(samples):
        size, reason = read_size(source) if captions else (None, "no caption")
        bucket = buckets.assign(*size) if size is not None else None
        if bucket is None:
            skipped[position] = reason or "too small"
        of.append(-1 if bucket is None else bucket)
        original.append(size)
    return BucketPlan(buckets, of, skipped, original)


def cover_side(size: Size, bucket: Size) -> int:
    """The shorter side `size` (width, height) has once resized to just cover `bucket`: how
    far a JPEG may be decoded at reduced size (decode_image's `draft`)."""
    scale = max(bucket[0] / size[0], bucket[1] / size[1])
    return math.ceil(scale * min(size))


def plan_of_sizes(sizes: list[Size]) -> BucketPlan:
    """A plan whose buckets are the distinct `sizes` given, one per sample (cached latents
    batched by their latent (width, height)); nothing skipped."""
    distinct = tuple(sorted(set(sizes), key=lambda s: (s[0] / s[1], s[0])))
    number = {size: i for i, size in enumerate(distinct)}
    return BucketPlan(Buckets(0, 0, 0, 0, distinct), [number[size] for size in sizes], {})


def check_step(setting: Union[bool, BucketSettings, None], resolution: int, factor: int) -> None:
    """Every bucket side must make whole latents: data.buckets' step a multiple of the VAE's
    downsampling `factor` (8 for the SD family's VAEs)."""
    buckets = resolve_buckets(setting, resolution)
    if buckets is not None and buckets.step % factor:
        raise DataError(f"data.buckets.step must be a multiple of the VAE's downsampling factor {factor}, got {buckets.step}")


def require_plan(setting: Union[bool, BucketSettings, None], dataset) -> None:
    """With data.buckets on, the dataset must have planned its buckets (sizes known up front)."""
    if setting and getattr(dataset, "buckets", None) is None:
        raise DataError(
            f"data.buckets needs every image's size before training, which this {type(dataset).__name__} cannot give "
            "(image folders, datasets sources and webdataset streams can): turn data.buckets off"
        )
