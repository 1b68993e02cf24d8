"""Dataset -> DataLoader of batches {"pixels": (B, 3, R, R), "caption": [str], "key": [str]}."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


class EpochLoader(DataLoader):
    """A DataLoader that tells its dataset the epoch before each pass, so that orders,
    crops and caption dropout change from epoch to epoch without the training loop's help.
    After resuming, call `set_epoch(epoch)` once (accelerate's loaders call the dataset's
    `set_epoch` themselves)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.dataset.set_epoch(self.epoch)
        self.epoch += 1
        return super().__iter__()


def make_loader(dataset, batch_size: int, num_workers: int, seed: int) -> EpochLoader:
    """Batches of `batch_size` (the last may be smaller) decoded by `num_workers` processes.

    The dataset is told the batch size so that each worker makes whole batches, in turn:
    the batches are the same for any number of workers. `seed` seeds torch's per-worker
    seeds; our samples take their randomness from the dataset's own seed."""
    if hasattr(dataset, "worker_chunk"):
        dataset.worker_chunk = batch_size
    return EpochLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,  # the epoch reaches them through shared memory
        generator=torch.Generator().manual_seed(seed),
    )
