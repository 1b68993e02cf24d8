"""A stream's epoch, shared with DataLoader workers, and the validation split.

Which samples of a map-style dataset each process reads is ldm.data.batches' business.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch


class SharedEpoch:
    """The current epoch, in shared memory: set in the main process (by the loader or
    accelerate's `set_epoch`), read by DataLoader workers, persistent ones included."""

    def __init__(self) -> None:
        self._value = torch.zeros((), dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self._value.fill_(int(epoch))

    def get(self) -> int:
        return int(self._value)


# At most this share of the samples is held out, whatever data.validation asks: a count
# meant for a large dataset (16 for the autoencoder) must not take most of a small folder.
MAX_HELD_OUT_SHARE = 5  # one sample in five


def held_out_count(samples: int, validation: int) -> int:
    """How many of `samples` the validation split holds for `data.validation` = `validation`."""
    return min(validation, samples // MAX_HELD_OUT_SHARE)


def validation_split(keys: Sequence[str], validation: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): the validation is the last `validation` samples (at
    most a fifth of them, held_out_count) in the order of sha256(key), an order that depends
    neither on the seed nor on the folder layout, so it is the same for every run and spread
    over all classes/folders."""
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha256(keys[i].encode()).digest())
    cut = len(order) - held_out_count(len(order), validation)
    return sorted(order[:cut]), sorted(order[cut:])
