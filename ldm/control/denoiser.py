"""The denoiser call with ControlNet residuals: the U-Net's backbone adapter steered by the
controls takes and returns what the plain denoiser does, so classifier-free guidance
(ldm.diffusion.guidance.GuidedModel) wraps it unchanged and the sampling loop knows nothing
of control. Like diffusers' ControlNet pipelines: each ControlNet sees the (guidance-batched)
latents and text, its control image repeated over the batch, its residuals weighed by scale
while the step lies in its [start, end] window; several ControlNets add their residuals (as
MultiControlNetModel). An SDXL ControlNet reads the pooled text and the size ids too."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ldm.control.units import active_weight
from ldm.diffusion.backbones import Residuals, backbone_of
from ldm.diffusion.backbones.unet import size_conditioning, takes_size_conditioning
from ldm.diffusion.conditioning import Conditioning
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


class ControlResiduals:
    """The controls' summed residuals for one denoiser call; call k is step k of
    `total_steps` (one call per step, as the loop makes). None when no control weighs in."""

    def __init__(self, controls: Sequence[ActiveControl], total_steps: int):
        self.controls = list(controls)
        self.total_steps = total_steps
        self.step = 0

    def __call__(self, sample: torch.Tensor, timestep, cond: Conditioning) -> Optional[Residuals]:
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
            # LCM student it is the teacher's ControlNet); the U-Net takes it. An SDXL
            # ControlNet reads the U-Net's pooled text and size ids, as diffusers' feeds it.
            added = size_conditioning(cond) if takes_size_conditioning(net.config) else {}
            d, m = net(latents, timestep, encoder_hidden_states=cond.tokens, controlnet_cond=image,
                       conditioning_scale=scale, **added, return_dict=False)  # fmt: skip
            down = d if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        self.step += 1
        return None if down is None else (down, mid)


def with_controls(denoiser, controls: Sequence[ActiveControl], total_steps: int):
    """`denoiser` itself without controls; else its backbone adapter steered by the controls'
    residuals (called as any denoiser is: ldm.diffusion.denoiser.denoise_call)."""
    if not controls:
        return denoiser
    backbone = backbone_of(denoiser)
    if not backbone.supports_controlnet:
        raise GenerationError(f"ControlNets steer U-Net models; this model's denoiser is {backbone.described}")
    return backbone.steered_by(ControlResiduals(controls, total_steps))
