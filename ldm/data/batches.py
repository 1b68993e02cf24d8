"""Datasets -> batches, resumable mid-epoch: the one way ldm-train (and anyone) reads data.

Map-style datasets (image folders, HF datasets, cached latents) go through
ResumableBatches: each epoch is a permutation seeded by (seed, epoch); a global batch is
the next batch_size * world_size positions, of which each process takes its own slice.
The position is (epoch, batches done), so resuming starts the sampler at that batch:
nothing already trained on is read again. Webdataset shards, which have no index, stream
through StreamBatches, whose position holds each DataLoader worker's place in its shards.
Datasets with aspect-ratio buckets go through BucketBatches: one bucket per batch (streams with
buckets: per-worker bucket buffers, ldm.data.stream_buckets).
"""

from __future__ import annotations

from typing import Iterator, Optional

import torch
from torch.utils.data import DataLoader, IterableDataset

from ldm.data.errors import DataError
from ldm.data.randomness import STREAMS, mixed_seed
from ldm.data.stream_buckets import BucketedPositionedBatches
from ldm.data.stream_position import PositionedBatches, StreamResume


def collate_samples(samples: list[Optional[dict]]) -> dict:
    """Stacks tensors and lists the rest; None (a sample the dataset could not read, already
    counted in its `stats`) is dropped, so a batch may be smaller than asked, or empty ({})."""
    kept = [sample for sample in samples if sample is not None]
    if not kept:
        return {}
    return {
        name: torch.stack([s[name] for s in kept]) if isinstance(kept[0][name], torch.Tensor) else [s[name] for s in kept]
        for name in kept[0]
    }  # tensors (B, ...)


def no_readable_sample(dataset) -> DataError:
    stats = getattr(dataset, "stats", None)
    counts = f" ({stats.summary()})" if stats is not None else ""
    return DataError(f"no readable sample in a whole epoch of the training data{counts}")


class BatchPosition:
    """Where a batcher is (epoch, batch within it): what a checkpoint saves and resume seeks."""

    epoch: int
    batch_in_epoch: int

    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch_in_epoch}

    def seek(self, position: dict) -> None:
        self.epoch = int(position["epoch"])
        self.batch_in_epoch = int(position["batch"])


class ResumableBatches(BatchPosition):
    """Batches of a map-style dataset; `dataset[(epoch, position)]` is read for each sample.

    One process with batch 2B sees exactly the samples two processes with B see together.
    Every process gets the same number of batches (the last partial global batch of an epoch
    is dropped), as DDP needs. A batch whose samples are all unreadable is passed over."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = self.count_batches()
        self.epoch = 0
        self.batch_in_epoch = 0

    def count_batches(self) -> int:
        batches = len(self.dataset) // self.global_batch
        if batches == 0:
            raise DataError(
                f"the training data has {len(self.dataset)} samples, fewer than one global batch "
                f"({self.batch_size} x {self.world_size} processes): lower train.batch_size or add data"
            )
        return batches

    def epoch_order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def batch_items(self, epoch: int, start: int) -> list[list[tuple[int, int]]]:
        """This process's batches of `epoch` from batch `start` on, as (epoch, position) items."""
        order = self.epoch_order(epoch)
        batches = []
        for b in range(start, self.batches_per_epoch):
            first = b * self.global_batch + self.rank * self.batch_size
            batches.append([(epoch, position) for position in order[first : first + self.batch_size]])
        return batches

    def epoch_batches(self) -> Iterator[dict]:
        """The rest of the current epoch; the position then moves to the next epoch."""
        whole_epoch = self.batch_in_epoch == 0
        loader = DataLoader(
            self.dataset,
            batch_sampler=self.batch_items(self.epoch, self.batch_in_epoch),
            num_workers=self.num_workers,
            collate_fn=collate_samples,
        )
        produced = False
        for batch in loader:
            self.batch_in_epoch += 1
            if batch:
                produced = True
                yield batch
        if whole_epoch and not produced:
            raise no_readable_sample(self.dataset)
        self.epoch += 1
        self.batch_in_epoch = 0

    def __iter__(self) -> Iterator[dict]:
        while True:
            yield from self.epoch_batches()


class BucketBatches(ResumableBatches):
    """ResumableBatches for a dataset with a bucket plan (`dataset.buckets`, ldm.data.buckets):
    every global batch holds one bucket. Per epoch the seeded permutation is grouped by bucket,
    in its order, into global batches (a bucket's last partial one is dropped); the batches are
    then shuffled by (seed, epoch), and each process takes its slice of each, so N processes
    see what one process with the global batch sees, and (epoch, batch) resumes exactly."""

    def count_batches(self) -> int:
        histogram = self.dataset.buckets.histogram()
        batches = sum(count // self.global_batch for count in histogram.values())
        if batches == 0:
            raise DataError(
                f"no aspect-ratio bucket holds one global batch ({self.batch_size} x {self.world_size} processes; "
                f"{self.dataset.buckets.histogram_line()}): lower train.batch_size, add data or widen data.buckets.step"
            )
        return batches

    def global_batches(self, epoch: int) -> list[list[int]]:
        members: dict[int, list[int]] = {}
        for position in self.epoch_order(epoch):
            bucket = self.dataset.buckets.of[position]
            if bucket >= 0:
                members.setdefault(bucket, []).append(position)
        size = self.global_batch
        batches = [group[i : i + size] for _, group in sorted(members.items()) for i in range(0, len(group) - size + 1, size)]
        generator = torch.Generator().manual_seed(mixed_seed(self.seed, epoch, STREAMS["order"]))
        return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]

    def batch_items(self, epoch: int, start: int) -> list[list[tuple[int, int]]]:
        first = self.rank * self.batch_size
        return [[(epoch, p) for p in batch[first : first + self.batch_size]] for batch in self.global_batches(epoch)[start:]]


class StreamBatches(BatchPosition):
    """Webdataset shards: the stream orders, splits across processes and applies its
    randomness from (seed, epoch) itself. Each batch comes with its DataLoader worker's place in
    the stream (ldm.data.stream_position), so `position()` holds every worker's place, and a
    batcher seeked to it (before iterating) opens no consumed shard and decodes no consumed
    sample. A position without them (an older checkpoint, another data.num_workers, another
    process count) is resumed as before: the consumed batches of that epoch are read again and
    dropped untrained. Whole epochs are never replayed."""

    def __init__(self, dataset, batch_size: int, seed: int, num_workers: int = 0):
        self.dataset = dataset
        self.workers = max(1, num_workers)
        # A stream that can say where it is (WebDatasetShards); anything else is batched as is.
        self.positioned = None
        if hasattr(dataset, "worker_stream"):
            bucketed = getattr(dataset, "buckets", None) is not None  # one bucket per batch (ldm.data.stream_buckets)
            self.positioned = (BucketedPositionedBatches if bucketed else PositionedBatches)(dataset, batch_size)
        batching = {"batch_size": None, "collate_fn": as_given} if self.positioned is not None else {"batch_size": batch_size}
        self.loader = DataLoader(
            self.positioned if self.positioned is not None else dataset,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,  # the epoch reaches them through shared memory
            generator=torch.Generator().manual_seed(seed),
            **batching,
        )
        self.epoch = 0
        self.batch_in_epoch = 0
        self._replay = 0  # batches to read again and drop (a position without the workers' places)
        self._start_epoch()

    def _start_epoch(self) -> None:
        self.worker_positions: list[Optional[dict]] = [None] * self.workers  # after its last batch taken
        self.next_worker = 0  # whose batch comes next (DataLoader asks its workers in turn)

    def position(self) -> dict:
        position = super().position()
        if self.positioned is not None and self.batch_in_epoch:
            position["stream"] = {"workers": self.workers, "next_worker": self.next_worker, "positions": list(self.worker_positions)}
        return position

    def seek(self, position: dict) -> None:
        super().seek(position)
        self._start_epoch()
        stream = position.get("stream")
        exact = self.positioned is not None and stream is not None and stream["workers"] == self.workers
        if self.positioned is not None:
            self.positioned.resume = StreamResume(self.epoch, stream["positions"], stream["next_worker"]) if exact else None
        if exact:
            self.worker_positions, self.next_worker = list(stream["positions"]), stream["next_worker"]
        self._replay = 0 if exact else self.batch_in_epoch

    def epoch_batches(self) -> Iterator[dict]:
        replay, whole_epoch = self._replay, self.batch_in_epoch == 0
        self._replay = 0
        self.dataset.set_epoch(self.epoch)
        produced = False
        for i, item in enumerate(self.loader):
            produced = True
            if i < replay:
                continue
            batch = item
            if self.positioned is not None:
                batch, worker, self.worker_positions[worker] = item
                self.next_worker = (worker + 1) % self.workers
            self.batch_in_epoch += 1
            yield batch
        if not produced and (whole_epoch or replay):
            raise no_readable_sample(self.dataset)
        self.epoch += 1
        self.batch_in_epoch = 0
        self._start_epoch()

    def __iter__(self) -> Iterator[dict]:
        while True:
            yield from self.epoch_batches()


def as_given(item):
    """The DataLoader's collate for items its dataset already batched."""
    return item


def make_batches(dataset, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 0):
    """Resumable batches of `dataset` for process `rank` of `world_size`: iterate for
    endless epochs, or call `epoch_batches()` for the rest of one; `position()` / `seek()`."""
    if isinstance(dataset, IterableDataset):
        # Streams are split across processes by ldm.data itself (rank/world_size at build time).
        return StreamBatches(dataset, batch_size, seed, num_workers)
    if getattr(dataset, "buckets", None) is not None:
        return BucketBatches(dataset, batch_size, seed, rank, world_size, num_workers)
    return ResumableBatches(dataset, batch_size, seed, rank, world_size, num_workers)
