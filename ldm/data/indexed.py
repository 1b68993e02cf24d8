"""Samples from a source with random access (a folder, a Hugging Face dataset), streamed.

An IterableDataset rather than a map-style one so that a bad image can simply be left out
(a map-style dataset must return something for every index) and so that each epoch's
order and split are computed here, from (seed, epoch, rank, worker), not by a sampler.
"""

from __future__ import annotations

import copy
import warnings
from typing import Iterator, Optional, Protocol

import torch

from ldm.data.captions import choose_caption, drop_caption
from ldm.data.decode import ImageSource, decode_image
from ldm.data.ordering import SharedEpoch, epoch_order, rank_share, worker_share
from ldm.data.randomness import sample_generator
from ldm.data.stats import DataStats
from ldm.data.transforms import ImageTransform


class Records(Protocol):
    """A source with random access: sample `index` -> (image, its captions)."""

    def __len__(self) -> int: ...
    def key(self, index: int) -> str: ...
    def read(self, index: int) -> tuple[ImageSource, list[str]]: ...
    def identity(self) -> str: ...


class IndexedImageDataset(torch.utils.data.IterableDataset):
    """Yields {"pixels": (3, R, R) in [-1, 1], "caption": str, "key": str}.

    training=True: shuffled each epoch, one caption drawn per epoch, caption dropout, and
    every rank gets equally many samples: the order is padded to a multiple of
    world_size and, with world_size > 1, a skipped sample is replaced by the next good one
    of the same worker (DDP hangs when one rank runs out of batches before the others).
    training=False (validation): fixed order, first caption, no dropout, no padding.

    `stats` counts each sample once, however many epochs read it."""

    def __init__(
        self,
        records: Records,
        indices: list[int],
        transform: ImageTransform,
        caption_dropout: float,
        seed: int,
        rank: int,
        world_size: int,
        training: bool,
        description: dict,
    ):
        super().__init__()
        self.records = records
        self.indices = indices
        self.transform = transform
        self.caption_dropout = caption_dropout if training else 0.0
        self.seed, self.rank, self.world_size, self.training = seed, rank, world_size, training
        self.description = description
        self.stats = DataStats()
        self.worker_chunk = 1  # make_loader sets the batch size (see ordering.worker_share)
        self._epoch = SharedEpoch()
        self._counted = torch.zeros(len(records), dtype=torch.bool).share_memory_()
        self._cache_skip: Optional[set[str]] = None  # set on caching views only

    # ------------------------------------------------------------------ interface

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def __len__(self) -> int:
        """Samples this rank reads per epoch (fewer if some are skipped, when world_size is 1)."""
        return len(rank_share(self.indices, self.rank, self.world_size, pad=self.training))

    def describe(self) -> dict:
        """What decides this dataset's pixels and captions (for the latent cache key)."""
        return {**self.description, "identity": self.records.identity(), "transform": self.transform.describe()}

    def caching_view(self, skip_keys: set[str]) -> "IndexedImageDataset":
        """All samples (every rank's), in fixed order, without `skip_keys` and with all
        their captions: {"pixels", "captions": list[str], "key"}. Shares `stats`."""
        view = copy.copy(self)
        view._cache_skip = set(skip_keys)
        return view

    # ------------------------------------------------------------------ reading

    def __iter__(self) -> Iterator[dict]:
        epoch = self._epoch.get()
        if self._cache_skip is not None:
            order = [i for i in self.indices if self.records.key(i) not in self._cache_skip]
            mine = worker_share(order, self.worker_chunk)
        else:
            order = epoch_order(self.indices, self.seed, epoch, shuffle=self.training)
            share = rank_share(order, self.rank, self.world_size, pad=self.training)
            mine = worker_share(share, self.worker_chunk)
        replace = self.training and self.world_size > 1 and self._cache_skip is None
        for position, index in enumerate(mine):
            sample = self._read(index, epoch)
            if sample is None and replace:
                sample = self._replacement(mine, position, epoch)
                if sample is None:
                    warnings.warn(f"rank {self.rank}: none of this worker's {len(mine)} samples is readable", stacklevel=2)
                    return
            if sample is not None:
                yield sample

    def _replacement(self, mine: list[int], position: int, epoch: int) -> Optional[dict]:
        for step in range(1, len(mine)):
            sample = self._read(mine[(position + step) % len(mine)], epoch)
            if sample is not None:
                return sample
        return None

    def _read(self, index: int, epoch: int) -> Optional[dict]:
        source, captions = self.records.read(index)
        if not captions:
            self._count(index, skipped="no caption")
            return None
        decoded = decode_image(source, min_size=self.transform.resolution)
        self._count(index, decoded.converted, decoded.skipped)
        if decoded.image is None:
            return None
        key = self.records.key(index)
        generator = sample_generator(self.seed, epoch, index, "transform") if self.transform.is_random else None
        pixels = self.transform(decoded.image, generator)  # (3, R, R)
        if self._cache_skip is not None:
            return {"pixels": pixels, "captions": captions, "key": key}
        caption_rng = sample_generator(self.seed, epoch, index, "caption")
        caption = choose_caption(captions, caption_rng if self.training else None)
        caption = drop_caption(caption, self.caption_dropout, caption_rng)
        return {"pixels": pixels, "caption": caption, "key": key}

    def _count(self, index: int, converted: Optional[str] = None, skipped: Optional[str] = None) -> None:
        if not self._counted[index]:
            self._counted[index] = True
            self.stats.record(converted, skipped)
