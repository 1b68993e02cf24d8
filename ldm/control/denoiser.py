"""The denoiser call with ControlNet residuals: the U-Net's or MMDiT's backbone adapter steered by the
controls takes and returns what the plain denoiser does, so classifier-free guidance
(ldm.diffusion.guidance.GuidedModel) wraps it unchanged and the sampling loop knows nothing
of control. Like diffusers' ControlNet pipelines: each ControlNet sees the (guidance-batched)
latents and text, its control image repeated over the batch, its residuals weighed by scale
while the step lies in its [start, end] window; several ControlNets add their residuals (as
MultiControlNetModel). An SDXL ControlNet reads the pooled text and the size ids too; an SD3
ControlNet reads its control image as latents and returns block samples (ldm.control.sd3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from ldm.control.sd3 import block_samples, is_sd3_controlnet
from ldm.control.units import active_weight
from ldm.diffusion.backbones import Residuals, backbone_of
from ldm.diffusion.backbones.unet import size_conditioning, takes_size_conditioning
from ldm.diffusion.conditioning import Conditioning
from ldm.settings import GenerationError


@dataclass
class ActiveControl:
    controlnet: torch.nn.Module  # diffusers ControlNetModel or SD3ControlNetModel
    image: torch.Tensor  # (1, 3, H, W) in [0, 1], the image's pixel size; an SD3 ControlNet's: its latents (1, C, h, w)
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
        each = []
        for control in self.controls:
            scale = control.scale * active_weight(self.step, self.total_steps, control.start, control.end)
            if scale != 0:  # diffusers runs it with weight 0: residuals of zeros, the same sum
                each.append(control_residuals(control, sample, timestep, cond, scale))
        self.step += 1
        return summed(each)


def control_residuals(control: ActiveControl, sample: torch.Tensor, timestep, cond: Conditioning, scale: float) -> Residuals:
    """One control's residuals weighed by `scale`: an SD3 ControlNet's block samples, or a
    U-Net ControlNet's (down residuals, mid residual)."""
    net = control.controlnet
    if is_sd3_controlnet(net.config):
        return block_samples(net, sample, timestep, cond, control.image, scale)
    image = control.image.to(device=sample.device, dtype=sample.dtype).expand(len(sample), -1, -1, -1)
    # Inpainting U-Nets take mask channels after the latents; a ControlNet sees the latents.
    latents = sample[:, : net.config.in_channels]  # (B, C, h, w)
    # No timestep_cond for the ControlNet: diffusers' has no guidance embedding (on an
    # LCM student it is the teacher's ControlNet); the U-Net takes it. An SDXL
    # ControlNet reads the U-Net's pooled text and size ids, as diffusers' feeds it.
    added = size_conditioning(cond) if takes_size_conditioning(net.config) else {}
    down, mid = net(latents, timestep, encoder_hidden_states=cond.tokens, controlnet_cond=image,
                    conditioning_scale=scale, **added, return_dict=False)  # fmt: skip
    return down, mid


def summed(residuals: Sequence[Residuals]) -> Optional[Residuals]:
    """Several controls' residuals added (as diffusers' multi-ControlNet models add them);
    None for none. All are of one kind: ldm.control.fit lets only one family steer a model."""
    if not residuals:
        return None
    if isinstance(residuals[0], tuple):  # U-Net ControlNets: (down residuals, mid residual)
        return [sum(parts) for parts in zip(*(down for down, _ in residuals))], sum(mid for _, mid in residuals)
    return [sum(parts) for parts in zip(*residuals)]  # SD3 ControlNets: one sample per block


def with_controls(denoiser, controls: Sequence[ActiveControl], total_steps: int):
    """`denoiser` itself without controls; else its backbone adapter steered by the controls'
    residuals (called as any denoiser is: ldm.diffusion.denoiser.denoise_call)."""
    if not controls:
        return denoiser
    backbone = backbone_of(denoiser)
    if not backbone.supports_controlnet:
        raise GenerationError(f"ControlNets steer U-Net and MMDiT models; this model's denoiser is {backbone.described}")
    return backbone.steered_by(ControlResiduals(controls, total_steps))
