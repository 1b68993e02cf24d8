"""Aspect-ratio buckets for webdataset streams (data.buckets with data.source webdataset).

A stream has no index: no picture's size is known before it streams past, so no sampler can
plan the epoch as BucketBatches does. Instead each picture's header is read as it arrives; it
goes to the bucket nearest its aspect ratio (ldm.data.buckets, as for the other sources) and
is decoded, resized and cropped to it, with its original size and crop kept. Each DataLoader
worker keeps one buffer per bucket and yields a batch when a buffer holds batch_size samples;
at the end of the worker's epoch the partly filled buffers are yielded as smaller batches, one
bucket each, in bucket order. So every batch holds one bucket and every readable sample of the
epoch is trained on once, as without buckets.

Resume: after each batch the worker's position (ldm.data.stream_position) also names the
samples its buffers hold ("held": (shard, sample number), bucket by bucket in arrival order).
A resumed worker reads those samples' bytes again, decodes them again (the same pixels and
caption: every draw follows (seed, epoch, key)) and puts them back before reading on, so it
gives the same batches in the same order as a run never stopped. The price: a held sample is
decoded twice, and a shard that still has one is opened again (the shuffle buffer's rule).
"""

from __future__ import annotations

from itertools import chain
from typing import Iterator, Optional

import torch

from ldm.data.buckets import Buckets, Size, cover_side
from ldm.data.decode import Decoded, decode_image, read_size
from ldm.data.stream_position import Origin, PositionedBatches

Shape = tuple[int, int]  # (height, width) of a sample's pixels


class StreamBuckets:
    """A stream's `buckets`: the bucket list. Which pictures fill which bucket is only known as
    they stream past, so there is no histogram before training."""

    def __init__(self, buckets: Buckets):
        self.buckets = buckets

    def histogram_line(self) -> str:
        return f"buckets: {self.buckets.summary()}; a stream's pictures are put in theirs as they arrive"


def decode_in_bucket(image: bytes, buckets: Buckets) -> tuple[Decoded, Optional[Size]]:
    """(the picture decoded for its bucket, the bucket's (width, height)); a picture smaller
    than every bucket, or whose header cannot be read, is skipped with the reason, undecoded."""
    size, reason = read_size(image)
    bucket = buckets.assign(*size) if size is not None else None
    if bucket is None:
        return Decoded(skipped=reason or "too small"), None
    target = buckets.sizes[bucket]
    return decode_image(image, draft=cover_side(size, target)), target


class BucketBuffers:
    """One worker's samples waiting for their bucket to fill, by pixel shape."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.waiting: dict[Shape, list[tuple[Optional[Origin], dict]]] = {}

    def add(self, origin: Optional[Origin], sample: dict) -> Optional[list[dict]]:
        """Puts `sample` in its bucket's buffer; returns the buffer's samples when it is full."""
        shape = tuple(sample["pixels"].shape[-2:])
        waiting = self.waiting.setdefault(shape, [])
        waiting.append((origin, sample))
        if len(waiting) < self.batch_size:
            return None
        del self.waiting[shape]
        return [s for _, s in waiting]

    def held(self) -> list[list[int]]:
        """The origins of the waiting samples (JSON), bucket by bucket, each in arrival order."""
        return [list(origin) for shape in sorted(self.waiting) for origin, _ in self.waiting[shape]]

    def leftovers(self) -> Iterator[list[dict]]:
        """The partly filled buffers, emptied one at a time in bucket order."""
        while self.waiting:
            yield [s for _, s in self.waiting.pop(min(self.waiting))]


class BucketedPositionedBatches(PositionedBatches):
    """PositionedBatches whose every batch holds one bucket: (batch, worker, position), the
    position naming the samples the buffers hold after the batch."""

    def __iter__(self):
        worker, epoch, stream = self.open_stream()
        buffers = BucketBuffers(self.batch_size)
        # A resumed worker's waiting samples first, back in their buffers (with the batch size
        # they were held at, none fills one), then the stream.
        for origin, raw in chain(stream.held, stream.tagged()):
            sample = self.dataset.read_sample(raw, epoch)
            full = buffers.add(origin, sample) if sample is not None else None
            if full is not None:
                yield torch.utils.data.default_collate(full), worker, {**stream.position(), "held": buffers.held()}
        for rest in buffers.leftovers():
            yield torch.utils.data.default_collate(rest), worker, {**stream.position(), "held": buffers.held()}


class GroupedByShape(torch.utils.data.IterableDataset):
    """A stream's samples as lists of at most `batch_size` of one pixel shape (each worker's own
    buffers), for building the latent cache of a bucketed stream."""

    def __init__(self, dataset, batch_size: int):
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size

    def __iter__(self) -> Iterator[list[dict]]:
        buffers = BucketBuffers(self.batch_size)
        for sample in self.dataset:
            full = buffers.add(None, sample)
            if full is not None:
                yield full
        yield from buffers.leftovers()
