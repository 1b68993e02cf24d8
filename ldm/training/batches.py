"""Batches that can be resumed mid-epoch without reading what was already trained on,
and per-step randomness that does not depend on how many processes share the batch."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from ldm.data import make_loader


class ResumableBatches:
    """Map-style datasets: each epoch is a permutation seeded by (seed, epoch); a global
    batch is the next `batch_size * world_size` indices, of which each process takes its
    own slice. The position is (epoch, batches done), so resuming builds the permutation
    and starts the sampler at that batch: skipped samples are never loaded or decoded.
    One process with batch 2B sees exactly the samples two processes with B see together."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, num_workers: int = 0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = len(dataset) // self.global_batch  # the last partial batch is dropped
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"the dataset has {len(dataset)} samples, fewer than one global batch "
                f"({batch_size} x {world_size} processes)"
            )
        self.epoch = 0
        self.batch_in_epoch = 0

    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch_in_epoch}

    def seek(self, position: dict) -> None:
        self.epoch = int(position["epoch"])
        self.batch_in_epoch = int(position["batch"])

    def _batch_indices(self, epoch: int, start: int) -> list[list[int]]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        batches = []
        for b in range(start, self.batches_per_epoch):
            first = b * self.global_batch + self.rank * self.batch_size
            batches.append(order[first : first + self.batch_size].tolist())
        return batches

    def __iter__(self) -> Iterator[dict]:
        while True:
            loader = DataLoader(
                self.dataset,
                batch_sampler=self._batch_indices(self.epoch, self.batch_in_epoch),
                num_workers=self.num_workers,
            )
            for batch in loader:
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0


class StreamBatches:
    """ldm.data's iterable datasets (folders, HF datasets, shards, cached latents): each
    orders, splits across processes and applies its randomness from (seed, epoch) itself.
    A stream has no index to seek, so resuming mid-epoch reads past the consumed batches
    of that epoch and drops them untrained: cheap for cached latents (a file read each),
    a decode per image otherwise. Whole epochs are never replayed."""

    def __init__(self, dataset, batch_size: int, seed: int, num_workers: int = 0):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.epoch = 0
        self.batch_in_epoch = 0

    def position(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch_in_epoch}

    def seek(self, position: dict) -> None:
        self.epoch = int(position["epoch"])
        self.batch_in_epoch = int(position["batch"])

    def __iter__(self) -> Iterator[dict]:
        loader = make_loader(self.dataset, self.batch_size, self.num_workers, self.seed)
        while True:
            skip = self.batch_in_epoch
            loader.set_epoch(self.epoch)
            produced = False
            for i, batch in enumerate(loader):
                produced = True
                if i < skip:
                    continue
                self.batch_in_epoch += 1
                yield batch
            if not produced:
                raise ValueError("the training data yielded no batch (every sample was skipped?)")
            self.epoch += 1
            self.batch_in_epoch = 0


def make_batches(dataset, batch_size: int, seed: int, rank: int, world_size: int, num_workers: int):
    if not isinstance(dataset, IterableDataset) and hasattr(dataset, "__len__"):
        return ResumableBatches(dataset, batch_size, seed, rank, world_size, num_workers)
    # Streams are split across processes by ldm.data itself (rank/world_size at build time).
    return StreamBatches(dataset, batch_size, seed, num_workers)


class Randomness:
    """The random draws of one micro-step. Each draw is made for the whole global batch
    from a CPU generator seeded by (seed, step, micro-step), and this process keeps its own
    rows: N processes draw exactly the noise one process with the global batch would, on any
    device. Shapes passed in are per-process (local batch first)."""

    def __init__(self, seed: int, step: int, micro_step: int, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu"):
        self.generator = torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + micro_step)
        self.rank = rank
        self.world_size = world_size
        self.device = torch.device(device)

    def _local(self, full: torch.Tensor, local_batch: int) -> torch.Tensor:
        start = self.rank * local_batch
        return full[start : start + local_batch].to(self.device)

    def _global_shape(self, shape) -> tuple[int, ...]:
        shape = tuple(shape)
        return (shape[0] * self.world_size, *shape[1:])

    def randn(self, shape) -> torch.Tensor:
        return self._local(torch.randn(self._global_shape(shape), generator=self.generator), shape[0])

    def rand(self, shape) -> torch.Tensor:
        return self._local(torch.rand(self._global_shape(shape), generator=self.generator), shape[0])

    def randint(self, high: int, shape) -> torch.Tensor:
        return self._local(torch.randint(0, high, self._global_shape(shape), generator=self.generator), shape[0])

    def per_sample(self, draw, local_batch: int) -> torch.Tensor:
        """`draw(n, generator) -> (n, ...)` made for the global batch, like every draw here;
        this process's rows (e.g. random inpainting masks)."""
        return self._local(draw(local_batch * self.world_size, self.generator), local_batch)
