"""The one denoising loop. txt2img, img2img and inpainting differ only in what they pass:
the starting latents, the timesteps (strength), the model's conditioning (a 9-channel
inpainting U-Net's extra channels are part of it) and a per-step constraint (the known region
for 4-channel inpainting)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from tqdm.auto import tqdm

from ldm.errors import LdmError


@dataclass
class StepInfo:
    """What a callback sees after each step."""

    step: int  # 0-based index of the step just taken
    total: int  # number of steps (model evaluations for Heun count separately)
    timestep: torch.Tensor
    latents: torch.Tensor  # (B, C, h, w) after this step
    predicted_x0: Optional[torch.Tensor]  # the sampler's estimate of the clean latents, if it has one


class StopSampling(LdmError):
    """Raised by a step callback to end sampling there (an interrupt): `denoise` returns the
    step's estimate of the clean latents (its latents when the sampler has none), so the
    caller decodes the picture as it stands instead of losing it. An LdmError like every
    exception ldm defines, though `denoise` always catches it."""


def denoise(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sampler,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    generators: Optional[list[torch.Generator]] = None,
    after_step: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None,
    callback: Optional[Callable[[StepInfo], None]] = None,
    progress: bool = True,
) -> torch.Tensor:
    """Runs `sampler` over `timesteps` from `latents` (sampler.start(noise), or clean latents
    sampler.renoise'd to the first timestep) and returns the final latents (or, when the
    callback raises StopSampling, the clean-latents estimate of the step it stopped at)."""
    for i, t in enumerate(tqdm(timesteps, desc="sampling", disable=not progress, leave=False)):
        prediction = model(sampler.model_input(latents, t), t)
        out = sampler.step(prediction, t, latents, generators)
        latents = out.prev_sample
        if after_step is not None:
            latents = after_step(i, latents)
        if callback is not None:
            x0 = getattr(out, "pred_original_sample", None)
            try:
                callback(StepInfo(i, len(timesteps), t, latents, x0))
            except StopSampling:
                return x0 if x0 is not None else latents
    return latents
