"""A stand-in for a training step's randomness (ldm.training.batches.Randomness) drawing from one seeded generator."""

import torch


class SeededDraws:
    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def rand(self, shape):
        return torch.rand(shape, generator=self.generator)

    def randint(self, high, shape):
        return torch.randint(0, high, shape, generator=self.generator)

    def randn(self, shape):
        return torch.randn(shape, generator=self.generator)
