"""Stage `inpaint`: a text-to-image model fine-tuned into a 9-channel inpainting model, as
SD2-inpainting was made. The denoiser's input convolution (a U-Net's conv_in, a DiT's patch
embedding) grows from C latent channels to C + 1 + C (noisy latents, the mask at latent size, the masked image's latents); the new
input weights start at zero, so step 0 is the text-to-image model exactly. Each sample
gets a random mask (ldm.training.random_masks); everything else (frozen VAE and text
encoder, caption dropout, eps/v targets, min-SNR, EMA, export) is the text2img stage's."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.inpainting import inpaint_channels, latent_mask, masked_pixels
from ldm.diffusion.process import NoiseProcess
from ldm.images import to_pil
from ldm.models.components import Components
from ldm.diffusion.backbones import backbone_of
from ldm.training.random_masks import random_masks
from ldm.training.text2img_stage import Text2ImgModule, Text2ImgStage
from ldm.training.validation import Grid, generate_options, sample_grid


def widen_to_inpainting(denoiser, latent_channels: int) -> None:
    """Input convolution: C -> 2C + 1 input channels; the extra ones weigh zero, so the
    denoiser's output does not depend on them until training moves those weights. Bias kept."""
    owner, name = backbone_of(denoiser).input_conv()
    old = getattr(owner, name)
    wide = nn.Conv2d(
        2 * latent_channels + 1, old.out_channels, old.kernel_size, old.stride, old.padding,
        device=old.weight.device, dtype=old.weight.dtype,
    )  # fmt: skip
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, : old.in_channels] = old.weight  # (out, 2C + 1, k, k)
        wide.bias.copy_(old.bias)
    setattr(owner, name, wide)
    # The diffusers config travels with the weights (save_pretrained, is_inpainting_model).
    denoiser.register_to_config(in_channels=2 * latent_channels + 1)


class InpaintModule(Text2ImgModule):
    def __init__(self, components: Components, process: NoiseProcess, caption_dropout, noise_offset, min_snr_gamma, mask_kinds: dict):
        super().__init__(components, process, caption_dropout, noise_offset, min_snr_gamma)
        self.mask_kinds = mask_kinds

    def image_conditions(self, cond: Conditioning, noisy: torch.Tensor, batch: dict, randomness) -> Conditioning:
        """The mask and the masked image's latents as channels beside the noisy latents,
        prepared as the pipeline prepares them at inference (ldm.diffusion.inpainting)."""
        pixels = batch["pixels"]  # (B, 3, H, W)
        height, width = pixels.shape[-2:]
        draw = lambda n, generator: random_masks(n, height, width, self.mask_kinds, generator)  # noqa: E731
        masks = randomness.per_sample(draw, len(pixels)).to(pixels.device)  # (B, 1, H, W)
        # A posterior sample, as the pipeline's encode_images(masked, generators) takes.
        masked_latents = self.latents({"pixels": masked_pixels(pixels, masks)}, randomness)  # (B, C, h, w)
        small_mask = latent_mask(masks.to(masked_latents), noisy.shape[-2:])  # (B, 1, h, w)
        return cond.replace(concat=inpaint_channels(small_mask, masked_latents))  # concat: (B, 1 + C, h, w)


class InpaintStage(Text2ImgStage):
    def load_components(self) -> Components:
        components = super().load_components()
        latent_channels = components.vae.config.latent_channels
        if components.denoiser.config.in_channels == latent_channels:
            widen_to_inpainting(components.denoiser, latent_channels)
        # else: already an inpainting model (2C + 1 channels), fine-tuned as it is.
        if components.config is not None:
            components.config.denoiser.in_channels = components.denoiser.config.in_channels
        return components

    def make_module(self, components: Components, process: NoiseProcess) -> nn.Module:
        config = self.config
        return InpaintModule(
            components, process, config.data.caption_dropout, config.text2img.noise_offset,
            config.text2img.min_snr_gamma, config.inpaint.mask_kinds,
        )  # fmt: skip

    def training_data(self, dataset):
        # No latent cache: the masked image, hence its latents, change at every step.
        return dataset

    def evaluate(self, step: int) -> dict:
        """Validation prompts inpainted into the middle of held-out (else training) images."""
        options = generate_options(self.config.validation, self.components.scheduler_config)

        def row(pipeline, prompt: str, sample: dict) -> list[Image.Image]:
            image = to_pil(sample["pixels"][None])[0]
            width, height = image.size
            mask = Image.new("L", image.size, 0)
            mask.paste(255, (width // 4, height // 4, 3 * width // 4, 3 * height // 4))
            return [image, pipeline.inpaint(prompt, image, mask, **options).images[0]]

        return sample_grid(self.context, self.components, step, Grid(row, columns=2, samples=True))
