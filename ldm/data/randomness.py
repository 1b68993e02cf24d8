"""Per-sample randomness derived from (seed, epoch, sample), never from global RNG state.

Every random choice about a sample (crop, flip, which caption, its tags, caption dropout) uses a
generator seeded from the run seed, the epoch and the sample's stable index, plus a
stream name, so a choice does not shift when another is switched on or off, and the
result does not depend on the number of processes or DataLoader workers.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch

STREAMS = {"transform": 1, "caption": 2, "order": 3, "shuffle": 4, "tags": 5}


def mixed_seed(*parts: int) -> int:
    """A 63-bit seed from integers, well mixed (nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def stable_index(key: str) -> int:
    """An integer for a string key that is the same in every process (unlike hash())."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def sample_generator(seed: int, epoch: int, index: int, stream: str) -> torch.Generator:
    return torch.Generator().manual_seed(mixed_seed(seed, epoch, index, STREAMS[stream]))


def epoch_rng(seed: int, epoch: int, stream: str, *more: int) -> random.Random:
    """A Python RNG for choices about a whole epoch (orders, shuffle buffers)."""
    return random.Random(mixed_seed(seed, epoch, STREAMS[stream], *more))
