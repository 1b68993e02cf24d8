"""Which samples each process and DataLoader worker reads, in which order, per epoch.

The split is explicit (rank, world_size passed in) because under accelerate the dataset
is built before, or without, torch.distributed being initialised.
"""

from __future__ import annotations

import hashlib
from typing import Sequence, TypeVar

import torch

from ldm.data.randomness import epoch_rng

T = TypeVar("T")


class SharedEpoch:
    """The current epoch, in shared memory: set in the main process (by the loader or
    accelerate's `set_epoch`), read by DataLoader workers, persistent ones included."""

    def __init__(self) -> None:
        self._value = torch.zeros((), dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self._value.fill_(int(epoch))

    def get(self) -> int:
        return int(self._value)


def validation_split(keys: Sequence[str], validation: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): the validation is the last `validation` samples in the
    order of sha256(key), an order that depends neither on the seed nor on the folder
    layout, so it is the same for every run and spread over all classes/folders."""
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).digest())
    cut = len(order) - min(validation, len(order))
    return sorted(order[:cut]), sorted(order[cut:])


def epoch_order(items: Sequence[T], seed: int, epoch: int, shuffle: bool) -> list[T]:
    order = list(items)
    if shuffle:
        epoch_rng(seed, epoch, "order").shuffle(order)
    return order


def rank_share(order: Sequence[T], rank: int, world_size: int, pad: bool) -> list[T]:
    """Every world_size-th item from `rank`. With `pad`, the order is first wrapped around
    to a multiple of world_size so that every rank gets as many items (under DDP a rank
    with one batch more waits forever for the others)."""
    order = list(order)
    if pad and order and len(order) % world_size:
        padding = world_size - len(order) % world_size
        order += (order * (padding // len(order) + 1))[:padding]
    return order[rank::world_size]


def worker_share(items: Sequence[T], chunk: int = 1) -> list[T]:
    """This DataLoader worker's items: chunks k, k + W, k + 2W, ... of `chunk` items each.
    With chunk = batch size, worker k makes whole batches k, k + W, ..., and the loader,
    which takes batches from workers in turn, returns them in single-process order."""
    info = torch.utils.data.get_worker_info()
    if info is None or info.num_workers == 1:
        return list(items)
    starts = range(info.id * chunk, len(items), info.num_workers * chunk)
    return [item for start in starts for item in items[start : start + chunk]]
