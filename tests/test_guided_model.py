"""Classifier-free guidance with one scale per sample (LCM training's teacher draws them):
each sample guided as it would be alone with its own scale, timestep and conditions."""

import torch

from tiny import build_tiny

from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.guidance import GuidedModel


def one(cond: Conditioning, i: int) -> Conditioning:
    return cond.map(lambda t: t[i : i + 1])


def inputs():
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(3, 4, 16, 16, generator=g)
    cond = Conditioning(torch.randn(3, 77, 32, generator=g), pooled=torch.randn(3, 16, generator=g))
    uncond = Conditioning(torch.randn(3, 77, 32, generator=g), pooled=torch.randn(3, 16, generator=g))
    return latents, cond, uncond


def test_a_per_sample_scale_guides_each_sample_with_its_own():
    denoiser = build_tiny().denoiser
    latents, cond, uncond = inputs()
    scales, timesteps = torch.tensor([1.0, 2.5, 9.0]), torch.tensor([10, 500, 990])  # (B,) each
    model = GuidedModel(denoiser, cond, uncond, scales)
    with torch.no_grad():
        together = model(latents, timesteps)  # (B, 4, h, w)
        alone = [
            GuidedModel(denoiser, one(cond, i), one(uncond, i), float(s))(latents[i : i + 1], timesteps[i : i + 1])
            for i, s in enumerate(scales)
        ]
    assert model.guided  # scale 1 included: a per-sample scale always makes both passes
    assert together.shape == latents.shape
    for i in (1, 2):
        assert torch.allclose(together[i], alone[i][0], atol=1e-5)
    with torch.no_grad():
        conditional = GuidedModel(denoiser, one(cond, 0), None, 1.0)(latents[:1], timesteps[:1])
    assert torch.allclose(together[0], conditional[0], atol=1e-5)  # scale 1 is the conditional output
    assert (together[2] - together[1]).abs().max() > 1e-2


def test_a_guidance_distilled_denoiser_embeds_each_samples_scale():
    denoiser = build_tiny(unet__time_cond_proj_dim=32).denoiser
    _, cond, uncond = inputs()
    scales = torch.tensor([1.5, 4.0, 8.0])
    per_sample = GuidedModel(denoiser, cond, uncond, scales)
    assert not per_sample.guided  # one conditional pass: the scale is an input
    embedding = per_sample.cond.vectors["guidance_embedding"]
    for i, s in enumerate(scales.tolist()):
        alone = GuidedModel(denoiser, one(cond, i), None, s).cond.vectors["guidance_embedding"]
        assert torch.allclose(embedding[i], alone[0], atol=1e-6)
