"""diffusers' own pipelines built from our components, for golden comparisons.

Prompts are passed as embeddings from our text encoder, so the diffusers pipelines need no
text encoder or tokenizer of their own."""

from __future__ import annotations

from ldm.diffusion.samplers import make_sampler


def diffusers_pipeline(pipeline_class, components, sampler: str, **parts):
    """`pipeline_class` (e.g. StableDiffusionInpaintPipeline) on our VAE and U-Net, with the
    scheduler our sampler `sampler` uses; `parts`: more of its parts (e.g. controlnet=...)."""
    pipe = pipeline_class(
        **parts,
        vae=components.vae,
        text_encoder=None,
        tokenizer=None,
        unet=components.unet,
        scheduler=make_sampler(sampler, components.scheduler_config).scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
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
