"""What one sampling run needs: the input of `Pipeline.sample`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ldm.control.denoiser import ActiveControl
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.conditioning_schedule import ConditioningSchedule
from ldm.diffusion.inpainting import KnownRegion
from ldm.diffusion.samplers import DEFAULT_SAMPLER
from ldm.diffusion.sampling import StepInfo


@dataclass
class SampleRequest:
    """txt2img: from unit-variance `noise`. img2img: with `init_latents` and strength < 1,
    from `init_latents` noised (with `noise`) to the timestep that strength selects, running
    only the last int(steps * strength) steps; when that is none, `init_latents` come back as
    they are. strength 1 starts from pure noise, whatever `init_latents`. Inpainting adds
    `known_region` (4-channel U-Nets) or the conditioning's concatenated channels (9-channel:
    cond.concat, which the unconditional pass shares). `controls`: ControlNets whose residuals
    steer every denoiser call in their window."""

    cond: Conditioning | ConditioningSchedule  # a schedule: prompt editing changes it during the run
    uncond: Optional[Conditioning | ConditioningSchedule]  # None: no unconditional pass
    noise: torch.Tensor  # (B, C, h, w)
    steps: int
    cfg: float
    sampler: str = DEFAULT_SAMPLER
    generators: Optional[list[torch.Generator]] = None  # one per image: ancestral samplers' noise
    callback: Optional[Callable[[StepInfo], None]] = None
    progress: bool = True
    init_latents: Optional[torch.Tensor] = None
    strength: float = 1.0
    known_region: Optional[KnownRegion] = None
    controls: tuple[ActiveControl, ...] = ()
    # A refiner's hand-off (diffusers' denoising_end / denoising_start): the base runs the steps
    # down to `switch_end`; the refiner continues `init_latents` as they are from `switch_start`.
    switch_end: Optional[float] = None
    switch_start: Optional[float] = None


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    """One CPU generator per image, so image k of a batch equals a lone run with its seed
    (and results do not depend on the device)."""
    return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
