"""The denoiser call with ControlNet residuals: it takes and returns what the U-Net does, so
classifier-free guidance (ldm.diffusion.guidance.GuidedModel) wraps it unchanged and the
sampling loop knows nothing of control. Like diffusers' ControlNet pipelines: each
ControlNet sees the (guidance-batched) latents and text, its control image repeated over
the batch, its residuals weighed by scale while the step lies in its [start, end] window;
several ControlNets add their residuals (as MultiControlNetModel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ldm.control.units import active_weight
from ldm.diffusion.denoiser import backbone
from ldm.settings import GenerationError


@dataclass
class ActiveControl:
    controlnet: torch.nn.Module  # diffusers ControlNetModel
    image: torch.Tensor  # (1, 3, H, W) in [0, 1], the image's pixel size
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


def control_tensor(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A control image at `size` (resized with Lanczos, as diffusers does) -> (1, 3, H, W) in [0, 1]."""
    image = image.convert("RGB")
    if image.size != tuple(size):
        image = image.resize(size, Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()  # (1, 3, H, W)


class ControlledDenoiser:
    """`denoiser(sample, t, encoder_hidden_states=..., return_dict=False)` with the controls'
    residuals; call k is step k of `total_steps` (one call per step, as the loop makes)."""

    backbone = "unet"  # called as a U-Net (ldm.diffusion.denoiser.denoise_call)

    def __init__(self, denoiser, controls: Sequence[ActiveControl], total_steps: int):
        self.denoiser = denoiser
        self.controls = list(controls)
        self.total_steps = total_steps
        self.step = 0

    @property
    def config(self):
        return self.denoiser.config  # what guidance asks of the model (its guidance embedding)

    def __call__(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, encoder_attention_mask=None,
                 timestep_cond=None, return_dict: bool = False):  # fmt: skip
        down, mid = None, None
        for control in self.controls:
            scale = control.scale * active_weight(self.step, self.total_steps, control.start, control.end)
            if scale == 0:
                continue  # diffusers runs it with weight 0: residuals of zeros, the same sum
            net = control.controlnet
            image = control.image.to(device=sample.device, dtype=sample.dtype).expand(len(sample), -1, -1, -1)
            # Inpainting U-Nets take mask channels after the latents; a ControlNet sees the latents.
            latents = sample[:, : net.config.in_channels]  # (B, C, h, w)
            # No timestep_cond for the ControlNet: diffusers' has no guidance embedding (on an
            # LCM student it is the teacher's ControlNet); the U-Net below takes it.
            d, m = net(latents, timestep, encoder_hidden_states=encoder_hidden_states, controlnet_cond=image,
                       conditioning_scale=scale, return_dict=False)  # fmt: skip
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        self.step += 1
        return self.denoiser(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, encoder_attention_mask=encoder_attention_mask,
            timestep_cond=timestep_cond, down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=return_dict,
        )  # fmt: skip


def with_controls(denoiser, controls: Sequence[ActiveControl], total_steps: int):
    """`denoiser` itself without controls; else the ControlledDenoiser around it."""
    if not controls:
        return denoiser
    if backbone(denoiser) != "unet":
        raise GenerationError("ControlNets steer U-Net models; this model's denoiser is a DiT")
    return ControlledDenoiser(denoiser, controls, total_steps)
