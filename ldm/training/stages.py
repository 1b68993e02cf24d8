"""What the shared loop needs from a training stage (the registry is ldm.training.stage_registry).

A stage builds its networks and owns its loss; the loop (ldm.training.loop) owns steps,
optimizer, accumulation, EMA, checkpoints, logging. To add a stage: subclass `Stage` in
its own module, add it to STAGES in stage_registry and its name to STAGE_NAMES in config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ldm.training.config import TrainConfig

# open_dataset(split) -> a dataset yielding {"pixels", "caption", "key", "original_size", "crop_top_left"}
# (ldm.data's contract; datasets of other origins may leave out the last two)
OpenDataset = Callable[[str], object]


@dataclass
class StageContext:
    config: TrainConfig
    device: torch.device
    output_dir: Path
    open_dataset: OpenDataset
    rank: int = 0
    world_size: int = 1
    is_main: bool = True


class Stage:
    """`module.forward(batch, randomness, step) -> (loss, logs)` is the loss: the loop calls
    the module (wrapped for DDP when there are several processes), never its parts."""

    module: nn.Module
    # True when some trained parameters take no part in some steps (a discriminator that
    # starts late): DDP must then look for unused parameters. Read by the loop from the
    # class, before the stage is built (the accelerator comes first).
    find_unused_parameters: bool = False

    def __init__(self, context: StageContext):
        self.context = context
        self.config = context.config

    def trained_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def compiled_parts(self) -> list[nn.Module]:
        """What train.compile compiles (the denoiser stages: their denoiser, a ControlNet)."""
        return []

    def training_data(self, dataset):
        """The dataset the loop batches, from the train split (text2img: cached latents)."""
        return dataset

    def evaluate(self, step: int) -> dict:
        """Held-out metrics and validation images; main process only, EMA weights in place."""
        return {}

    def export(self) -> Path:
        """Writes the stage's final product under the output folder; returns its path."""
        raise NotImplementedError

    def state(self) -> dict:
        """Plain values (JSON) the stage needs back on resume."""
        return {}

    def load_state(self, state: dict) -> None:
        pass

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors besides the trained weights that resume needs (lcm: the target network), whole.
        Called on the main process; under FSDP on every process (gathering shards is collective)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def after_step(self) -> None:
        """Called after each optimizer step that trained (lcm: the target network follows)."""


def first_samples(dataset, n: int) -> list[dict]:
    """Up to `n` readable samples from the start of a dataset (map-style or stream), for evaluation."""
    import itertools

    from torch.utils.data import IterableDataset

    if isinstance(dataset, IterableDataset):
        samples = iter(dataset)
    else:  # unreadable samples read as None
        samples = (dataset[i] for i in range(len(dataset)))
    return list(itertools.islice((s for s in samples if s is not None), n))
