"""Samples from a source with random access (a folder, a Hugging Face dataset).

A map-style dataset: which samples a process reads, and in which order, is the sampler's
business (ldm.data.batches), so a run can resume mid-epoch without reading what it already
trained on. The sampler asks for `dataset[(epoch, position)]`: the epoch seeds the sample's
random crop, flip and caption draw. A bad image gives None, which the collate function
drops from its batch (ldm.data.batches.collate_samples); `stats` counts it, with why.
"""

from __future__ import annotations

import copy
from typing import Iterator, Optional, Protocol, Union

import torch

from ldm.data.caption_transforms import CaptionDraw
from ldm.data.config import CaptionSettings
from ldm.data.control_images import with_control
from ldm.data.buckets import BucketPlan, Buckets, cover_side, plan_buckets
from ldm.data.decode import ImageSource, decode_image
from ldm.data.exclude import Exclusion
from ldm.data.ordering import MAX_HELD_OUT_SHARE
from ldm.data.randomness import sample_generator
from ldm.data.stats import DataStats
from ldm.data.transforms import ImageTransform, size_conditioning

# dataset[position] reads epoch 0; dataset[(epoch, position)] what the sampler asks for.
Item = Union[int, tuple[int, int]]


class Records(Protocol):
    """A source with random access: sample `index` -> (image, its captions)."""

    def __len__(self) -> int: ...
    def key(self, index: int) -> str: ...
    def read(self, index: int) -> tuple[ImageSource, list[str]]: ...
    def identity(self) -> str: ...


def split_item(item: Item) -> tuple[int, int]:
    """(epoch, position) of a dataset index as the sampler or a plain `dataset[i]` gives it."""
    return (int(item[0]), int(item[1])) if isinstance(item, tuple) else (0, int(item))


class IndexedImageDataset(torch.utils.data.Dataset):
    """dataset[(epoch, position)] -> {"pixels": (3, R, R) in [-1, 1] (a bucket's (3, H, W) with
    data.buckets), "caption": str, "key": str, "original_size": (2,) long [height, width] of the
    picture, "crop_top_left": (2,) long [top, left] of the crop in the resized picture}, or None for a sample that cannot be trained on (unreadable, too small, no caption).

    training=True: one caption drawn per epoch, its tags rearranged (data.captions), caption
    dropout, random crop/flip if set. training=False (validation): first caption, no dropout. Iterating gives the readable
    samples in fixed order (epoch 0), for evaluation and inspection.

    `stats` counts each sample once, however many epochs or processes' workers read it."""

    def __init__(
        self,
        records: Records,
        indices: list[int],
        transform: ImageTransform,
        caption_dropout: float,
        seed: int,
        training: bool,
        description: dict,
        captions: Optional[CaptionSettings] = None,  # data.captions; None: captions as written
    ):
        super().__init__()
        self.records = records
        self.indices = indices
        self.transform = transform
        self.caption_dropout = caption_dropout if training else 0.0
        self.draw_caption = CaptionDraw(captions or CaptionSettings(), seed, self.caption_dropout)
        self.seed, self.training = seed, training
        self.description = description
        self.stats = DataStats()
        self.caching = False  # set on caching views only
        self.exclusion: Optional[Exclusion] = None  # data.exclude's effect, when a list is set
        self.buckets: Optional[BucketPlan] = None  # data.buckets: each sample's bucket (use_buckets)
        self._counted = torch.zeros(len(records), dtype=torch.bool).share_memory_()

    # ------------------------------------------------------------------ interface

    def __len__(self) -> int:
        return len(self.indices)

    def key(self, position: int) -> str:
        """The key of sample `position`, without reading its image."""
        return self.records.key(self.indices[position])

    def describe(self) -> dict:
        """What decides this dataset's pixels and captions (for the latent cache key)."""
        return {**self.description, "identity": self.records.identity(), "transform": self.transform.describe()}

    def split_summary(self, asked: int) -> str:
        """How the source was split, said of the training split's dataset with data.validation =
        `asked`: '24 samples: 20 for training, 4 held out for validation (data.validation asks
        16; at most 1 sample in 5 is held out)', and with data.exclude ', 3 excluded (...)'."""
        excluded = self.exclusion.excluded if self.exclusion else 0
        held_out = len(self.records) - excluded - len(self.indices)
        summary = f"{len(self.records)} samples: {len(self.indices)} for training, {held_out} held out for validation"
        if held_out < asked:
            summary += f" (data.validation asks {asked}; at most 1 sample in {MAX_HELD_OUT_SHARE} is held out)"
        else:
            summary += f" (data.validation: {asked})"
        return f"{summary}, {self.exclusion.summary()}" if self.exclusion else summary

    def caching_view(self) -> "IndexedImageDataset":
        """The same samples with all their captions: {"pixels", "captions": list[str], "key"}.
        Shares `stats`."""
        view = copy.copy(self)
        view.caching = True
        return view

    def __getitem__(self, item: Item) -> Optional[dict]:
        epoch, position = split_item(item)
        if not 0 <= position < len(self.indices):
            raise IndexError(f"sample {position} of {len(self.indices)}")
        return self._read(position, epoch)

    def __iter__(self) -> Iterator[dict]:
        for position in range(len(self)):
            sample = self[position]
            if sample is not None:
                yield sample

    # ------------------------------------------------------------------ reading

    def use_buckets(self, buckets: Buckets, count_skips: bool) -> None:
        """Plans each sample's aspect-ratio bucket from its image header (ldm.data.buckets). The
        samples left out are never read; they are counted here, by one process (`count_skips`)."""
        self.buckets = plan_buckets(buckets, (self.records.read(index) for index in self.indices))
        for position, reason in self.buckets.skipped.items():
            if count_skips:
                self._count(self.indices[position], skipped=reason)
            self._counted[self.indices[position]] = True

    def _read(self, position: int, epoch: int) -> Optional[dict]:
        index = self.indices[position]
        if self.buckets is not None and self.buckets.of[position] < 0:
            return None  # left out by the plan, and counted then
        source, captions = self.records.read(index)
        if not captions:
            self._count(index, skipped="no caption")
            return None
        size = self.buckets.size_of(position) if self.buckets is not None else None
        if size is None:
            decoded = decode_image(source, min_size=self.transform.resolution)
        else:  # the plan saw the picture cover its bucket
            decoded = decode_image(source, draft=cover_side(self.buckets.original[position], size))
        generator = lambda: sample_generator(self.seed, epoch, index, "transform") if self.transform.is_random else None  # noqa: E731
        extra = {}
        if getattr(self.records, "has_control", False):
            decoded, extra = with_control(decoded, self.records.control(index), self.transform, generator, size)
        self._count(index, decoded.converted, decoded.skipped)
        if decoded.image is None or decoded.skipped:
            return None
        key = self.records.key(index)
        pixels, crop_top_left = self.transform.crop_of(decoded.image, generator(), size)  # (3, H, W)
        extra.update(size_conditioning(decoded, crop_top_left))
        if self.caching:
            return {"pixels": pixels, "captions": captions, "key": key, **extra}
        caption = self.draw_caption(captions, epoch, key, self.training)
        return {"pixels": pixels, "caption": caption, "key": key, **extra}

    def _count(self, index: int, converted: Optional[str] = None, skipped: Optional[str] = None) -> None:
        if not self._counted[index]:
            self._counted[index] = True
            self.stats.record(converted, skipped)
