"""ldm.diffusion.denoiser: the one call contract knows each backbone, also when the module is
wrapped by torch.compile (what a user compiling the denoiser for speed hands over)."""

import pytest
import torch

from tiny import build_tiny

from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.denoiser import backbone, denoise_call


def test_a_compiled_denoiser_keeps_its_backbone():
    denoiser = build_tiny().denoiser.eval()
    compiled = torch.compile(denoiser)  # wrapping is lazy: nothing compiles until called
    assert backbone(compiled) == backbone(denoiser) == "unet"


def test_an_unknown_module_is_named():
    with pytest.raises(TypeError, match="Linear"):
        backbone(torch.nn.Linear(2, 2))


def test_the_call_runs_through_the_contract():
    denoiser = build_tiny().denoiser.eval()
    latents = torch.randn(1, denoiser.config.in_channels, 8, 8)
    context = torch.randn(1, 77, denoiser.config.cross_attention_dim)
    with torch.no_grad():
        out = denoise_call(denoiser, latents, torch.tensor([10]), Conditioning(context))
    assert out.shape == latents.shape
