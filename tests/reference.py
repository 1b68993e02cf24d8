"""diffusers' own pipelines built from our components, for golden comparisons.

Prompts are passed as embeddings from our text encoder, so the diffusers pipelines need no
text encoder or tokenizer of their own."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import FrozenDict

from ldm.diffusion.samplers import make_sampler


class DiTAsUNet(torch.nn.Module):
    """A PixArt transformer called the way Stable Diffusion pipelines call their U-Net, so
    that their img2img and inpainting loops can be the reference for a DiT too. The call
    follows PixArtAlphaPipeline's, written here apart from ldm's adapter."""

    def __init__(self, dit):
        super().__init__()
        self.dit = dit
        self.config = FrozenDict({**dit.config, "time_cond_proj_dim": None})

    @property
    def dtype(self):
        return self.dit.dtype

    @property
    def device(self):
        return self.dit.device

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=False, **unused):
        timestep = timestep[None] if timestep.dim() == 0 else timestep
        out = self.dit(
            sample,
            encoder_hidden_states=encoder_hidden_states,
            timestep=timestep.expand(sample.shape[0]),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]
        return (out,)


def diffusers_pipeline(pipeline_class, components, sampler: str, **parts):
    """`pipeline_class` (e.g. StableDiffusionInpaintPipeline) on our VAE and denoiser (a DiT
    dressed as a U-Net), with the scheduler our sampler `sampler` uses; `parts`: more of its
    parts (e.g. controlnet=...)."""
    denoiser = components.denoiser
    pipe = pipeline_class(
        **parts,
        vae=components.vae,
        text_encoder=None,
        tokenizer=None,
        unet=DiTAsUNet(denoiser) if type(denoiser).__name__ == "PixArtTransformer2DModel" else denoiser,
        scheduler=make_sampler(sampler, components.scheduler_config).scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def upscale_pipeline(components, sampler: str, text_encoder=None, tokenizer=None):
    """diffusers' StableDiffusionUpscalePipeline on our upscaler's VAE and U-Net, with the
    scheduler of `sampler` and the model's low-resolution schedule (without a text encoder,
    prompts come as our text encoder's embeddings)."""
    from diffusers import DDPMScheduler, StableDiffusionUpscalePipeline

    from ldm.diffusion.schedule import scheduler_config

    upscaler = components.upscaler
    pipe = StableDiffusionUpscalePipeline(
        vae=components.vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=components.denoiser,
        low_res_scheduler=DDPMScheduler.from_config(scheduler_config(upscaler.low_res_scheduler)),
        scheduler=make_sampler(sampler, components.scheduler_config).scheduler,
        max_noise_level=upscaler.max_noise_level,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixart_pipeline(components, sampler: str):
    """diffusers' PixArtAlphaPipeline on our VAE and DiT, with the scheduler of `sampler`."""
    from diffusers import PixArtAlphaPipeline

    pipe = PixArtAlphaPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=components.vae,
        transformer=components.denoiser,
        scheduler=make_sampler(sampler, components.scheduler_config).scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class LastLatents:
    """A sampling callback that keeps the latents after the last step."""

    def __init__(self):
        self.latents = None
        self.steps = 0

    def __call__(self, info) -> None:
        self.latents = info.latents
        self.steps += 1
