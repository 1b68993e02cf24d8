"""Where a webdataset stream stands, so that a resumed run continues it exactly and reads
nothing it already trained on.

One DataLoader worker's stream is: its shards in order -> the samples of each tar (raw bytes,
nothing decoded) -> a seeded shuffle buffer -> decoding. After each batch the worker notes its
position, a small JSON dict:

    {"shard": 3, "read": 120,                 # shard 3 of its list, 120 of its samples read
     "buffer": [[2, 97], [3, 5], ...],        # (shard, sample number) of each buffered sample, in order
     "rng": [3, [...625 ints...], null],      # the shuffle's random.Random state
     "held": [[1, 40], ...]}                  # with data.buckets: samples in partly filled buckets

and the main process keeps the position of the last batch it took from each worker. A worker
resumed from its position opens no shard before `shard` except the few that still have samples
in the buffer (it reads those samples' bytes back, without decoding), skips the first `read`
samples of `shard` at the tar level, and goes on: the same picks from the same buffer with the
same random state, so the same samples in the same order as a run never stopped.
"""

from __future__ import annotations

import random
from collections import deque
from itertools import islice
from typing import Callable, Iterator, Optional

import torch

Raw = dict  # one tar sample: {"__key__": ..., "jpg": b"...", "txt": b"...", ...}
Origin = tuple[int, int]  # (shard number in the worker's list, sample number in that shard)
OpenShard = Callable[[str], Iterator[Raw]]


class ShuffleBuffer:
    """webdataset's shuffle (webdataset.filters._shuffle: the same reads and the same picks for
    the same random state), with its buffer and random state in the open so they can be saved."""

    def __init__(self, size: int, initial: int, rng: random.Random, items: Optional[list] = None):
        self.size, self.initial, self.rng = size, min(initial, size), rng
        self.items = items if items is not None else []  # (origin, raw sample)

    def shuffled(self, samples: Iterator) -> Iterator:
        buffer = self.items
        for sample in samples:
            buffer.append(sample)
            if len(buffer) < self.size:
                try:
                    buffer.append(next(samples))  # fills twice as fast as it empties, as webdataset does
                except StopIteration:
                    pass
            if len(buffer) >= self.initial:
                yield self._pick()
        while buffer:
            yield self._pick()

    def _pick(self):
        buffer = self.items
        k = self.rng.randint(0, len(buffer) - 1)
        sample = buffer[k]
        buffer[k] = buffer[-1]
        buffer.pop()
        return sample


class ShardReader:
    """The raw samples of `urls` from sample `read` of shard `shard` on, as (origin, sample). It
    reads one sample ahead within a shard, so that after the last sample of a shard its position
    is already the next shard's start: a resume never reopens a finished shard."""

    def __init__(self, urls: list[str], open_shard: OpenShard, shard: int = 0, read: int = 0, opened: Optional[Iterator[Raw]] = None):
        self.urls, self.open_shard = urls, open_shard
        self.shard, self.read = shard, read
        self._opened = opened  # the shard `shard`, already `read` samples in

    def __iter__(self) -> Iterator[tuple[Origin, Raw]]:
        while self.shard < len(self.urls):
            index, samples = self.shard, self._opened
            self._opened = None
            if samples is None:
                samples = self.open_shard(self.urls[index])
                deque(islice(samples, self.read), maxlen=0)  # consumed: skipped as tar members, never decoded
            upcoming = next(samples, None)
            while upcoming is not None:
                current, upcoming = upcoming, next(samples, None)
                origin = (index, self.read)
                self.shard, self.read = (index, self.read + 1) if upcoming is not None else (index + 1, 0)
                yield origin, current
            self.shard, self.read = index + 1, 0


def buffered_samples(urls: list[str], open_shard: OpenShard, position: dict) -> tuple[list, Optional[Iterator[Raw]]]:
    """(the buffer `position` names, then the samples it holds back (its "held": read past
    the shuffle buffer but not yet trained on, ldm.data.stream_buckets), as (origin, raw
    sample) in their order; the current shard, opened and `read` samples in, or None past the
    last shard). Reads only the shards that hold
    buffered samples and the current one, each up to what is needed; a sample that cannot be
    read again (a shard that failed since) is left out."""
    wanted = [tuple(origin) for origin in position["buffer"] + position.get("held", [])]
    current, read = position["shard"], position["read"]
    found: dict[Origin, Raw] = {}
    opened = None
    for shard in sorted({s for s, _ in wanted} | ({current} if current < len(urls) else set())):
        needed = {ordinal for s, ordinal in wanted if s == shard}
        samples = open_shard(urls[shard])
        length = read if shard == current else max(needed) + 1
        for ordinal, raw in enumerate(islice(samples, length)):
            if ordinal in needed:
                found[(shard, ordinal)] = raw
        if shard == current:
            opened = samples
    return [(origin, found[origin]) for origin in wanted if origin in found], opened


class WorkerStream:
    """One worker's raw samples for an epoch, from the start or from a saved position."""

    def __init__(self, urls: list[str], open_shard: OpenShard, shuffle: Optional[tuple[int, int, random.Random]], start: Optional[dict] = None):
        """shuffle: (buffer size, initial fill, the epoch's random state), or None for file order."""
        items, opened, shard, read = [], None, 0, 0
        self.held: list[tuple[Origin, Raw]] = []  # the samples `start` holds back, read again
        if start is not None:
            items, opened = buffered_samples(urls, open_shard, start)
            held = {tuple(origin) for origin in start.get("held", [])}
            self.held = [item for item in items if item[0] in held]
            items = [item for item in items if item[0] not in held]
            shard, read = start["shard"], start["read"]
        self.reader = ShardReader(urls, open_shard, shard, read, opened)
        self.buffer = None
        if shuffle is not None:
            size, initial, rng = shuffle
            if start is not None:
                version, state, gauss = start["rng"]
                rng.setstate((version, tuple(state), gauss))
            self.buffer = ShuffleBuffer(size, initial, rng, items)

    def __iter__(self) -> Iterator[Raw]:
        return (raw for _, raw in self.tagged())

    def tagged(self) -> Iterator[tuple[Origin, Raw]]:
        """The samples with their origins, which a position may name."""
        tagged = iter(self.reader)
        if self.buffer is not None:
            tagged = self.buffer.shuffled(tagged)
        return tagged

    def position(self) -> dict:
        """Where the stream stands after the sample it gave last (JSON)."""
        buffer, rng = [], None
        if self.buffer is not None:
            buffer = [list(origin) for origin, _ in self.buffer.items]
            version, state, gauss = self.buffer.rng.getstate()
            rng = [version, list(state), gauss]
        return {"shard": self.reader.shard, "read": self.reader.read, "buffer": buffer, "rng": rng}


class StreamResume:
    """What a resumed epoch starts from: each worker's position (None: from its start) and which
    worker the DataLoader, which always asks worker 0 first, must ask first."""

    def __init__(self, epoch: int, positions: list[Optional[dict]], next_worker: int):
        self.epoch, self.positions, self.next_worker = epoch, positions, next_worker

    def worker(self, physical: int, epoch: int) -> tuple[int, Optional[dict]]:
        """(the worker whose stream DataLoader worker `physical` reads in `epoch`, its start)."""
        if epoch != self.epoch:
            return physical, None
        logical = (physical + self.next_worker) % len(self.positions)
        return logical, self.positions[logical]


class PositionedBatches(torch.utils.data.IterableDataset):
    """A stream's batches, each with its worker and that worker's position after it: (batch,
    worker, position). Batches are formed in the worker as DataLoader's own batching forms them
    (batch_size samples in a row, the last one of the epoch smaller), so the order is the same."""

    def __init__(self, dataset, batch_size: int):
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size
        self.resume: Optional[StreamResume] = None  # set before the workers start: they get a copy

    def open_stream(self) -> tuple[int, int, WorkerStream]:
        """(the worker whose stream this DataLoader worker reads, the epoch, that stream, resumed
        where the run stopped)."""
        info = torch.utils.data.get_worker_info()
        physical, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.dataset.current_epoch()
        worker, start = self.resume.worker(physical, epoch) if self.resume is not None else (physical, None)
        return worker, epoch, self.dataset.worker_stream(epoch, worker, workers, start)

    def __iter__(self):
        worker, epoch, stream = self.open_stream()
        samples = []
        for sample in self.dataset.decoded(stream, epoch):
            samples.append(sample)
            if len(samples) == self.batch_size:
                yield torch.utils.data.default_collate(samples), worker, stream.position()
                samples = []
        if samples:
            yield torch.utils.data.default_collate(samples), worker, stream.position()
