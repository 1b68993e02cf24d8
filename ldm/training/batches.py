"""Per-step randomness that does not depend on how many processes share the batch.
(The batches themselves: ldm.data.make_batches.)"""

from __future__ import annotations

import torch


class Randomness:
    """The random draws of one micro-step. Each draw is made for the whole global batch
    from a CPU generator seeded by (seed, step, micro-step), and this process keeps its own
    rows: N processes draw exactly the noise one process with the global batch would, on any
    device. Shapes passed in are per-process (local batch first)."""

    def __init__(self, seed: int, step: int, micro_step: int, rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu"):
        self.generator = torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + micro_step)
        self.step, self.micro_step = step, micro_step  # where in the run (prior preservation's class images)
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
