"""Stage `upscaler`: a text-conditioned diffusion super-resolution model in the form of Stable
Diffusion's x4 upscaler. Its U-Net reads the noisy latents of the high-resolution picture
beside the low-resolution picture (3 more input channels; the VAE's factor is the upscaling
factor, so the picture is at the latents' size), which is noised by the model's
`low_res_scheduler` to a noise level drawn per sample and told to the U-Net as its class label.

Pairs are made at every step from any image data: the data's picture, or a random crop of it
(`upscaler.crop`), is the truth; downscaled by the VAE's factor and degraded (blur, pixel noise,
JPEG: ldm.data.degradations) it is the input. Every draw (crop, degradations, noise level, noise)
comes from the step's randomness, so resumed and multi-process runs train on the same pairs.
Everything else (caption dropout, eps/v targets, min-SNR, EMA, export) is the text2img stage's."""

from __future__ import annotations

import warnings
from typing import Optional

import torch
from PIL import Image
from torch import nn

from ldm.config import UpscalerConfig
from ldm.data.degradations import Degradations, downscale, from_uint8, to_uint8
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.process import NoiseProcess, noise_process
from ldm.diffusion.schedule import scheduler_config
from ldm.formats.model_folder import ModelError
from ldm.images import to_pil
from ldm.models.components import Components
from ldm.pipeline import Pipeline
from ldm.pipeline.request import SampleRequest, make_generators
from ldm.training.config import Text2ImgSection, UpscalerSection, check_upscaler_sizes
from ldm.training.latents import CacheExtras
from ldm.training.random_crops import crop_pictures
from ldm.training.text2img_stage import Text2ImgModule, Text2ImgStage
from ldm.training.validation import Grid, generate_options, sample_grid

LOW_RES = "low_res"  # the batch's (and the latent cache's) low-resolution picture


def low_res_process(upscaler: UpscalerConfig) -> NoiseProcess:
    """How the low-resolution picture is noised to a noise level (DDPM's q(x_t | x_0))."""
    return noise_process(scheduler_config(upscaler.low_res_scheduler))


class UpscalerModule(Text2ImgModule):
    def __init__(self, components: Components, process: NoiseProcess, caption_dropout: float, settings: UpscalerSection):
        super().__init__(components, process, caption_dropout, settings.noise_offset, settings.min_snr_gamma)
        upscaler = components.config.upscaler
        self.crop = settings.crop
        self.factor = 2 ** (len(components.vae.config.block_out_channels) - 1)  # the VAE's: the upscaling factor
        self.degrade = Degradations(*(tuple(r) if r else None for r in (settings.blur, settings.noise, settings.jpeg_quality)))
        self.noise_levels = tuple(settings.noise_levels or (0, upscaler.max_noise_level))
        self.low_res_process = low_res_process(upscaler)

    def pairs(self, batch: dict, randomness) -> dict:
        """The batch with its truth (`pixels`, cropped) and its degraded low-resolution picture."""
        if "pixels" in batch:
            pixels = batch["pixels"]
            if self.crop is not None:
                pixels = crop_pictures(pixels, self.crop, randomness)
            low = downscale(pixels, self.factor)  # (B, 3, h, w)
            batch = {**batch, "pixels": pixels}
        else:  # from the latent cache, beside the truth's latents
            low = from_uint8(batch[LOW_RES])
        return {**batch, LOW_RES: self.degrade(low, randomness).to(self.denoiser.device)}

    def image_conditions(self, cond: Conditioning, noisy: torch.Tensor, batch: dict, randomness) -> Conditioning:
        """The low-resolution picture noised to a level drawn per sample, beside the latents;
        the level as the U-Net's class label."""
        low = batch[LOW_RES]
        first, last = self.noise_levels
        levels = (first + randomness.randint(last - first + 1, (len(low),))).to(noisy.device)  # (B,)
        noised = self.low_res_process.noised(low, randomness.randn(low.shape).to(low), levels)
        return cond.replace(concat=noised).with_vector("noise_level", levels)  # concat: (B, 3, h, w)

    def forward(self, batch: dict, randomness, step: int):
        return super().forward(self.pairs(batch, randomness), randomness, step)


class UpscalerStage(Text2ImgStage):
    @property
    def settings(self) -> Text2ImgSection:
        return self.config.upscaler

    def load_components(self) -> Components:
        components = super().load_components()
        if components.config is None or components.config.upscaler is None:
            raise ModelError(
                f"upscaler.init_from: {self.section.init_from} is not an upscaler (its model has no `upscaler` section): "
                "start from an upscaler model, or leave init_from out to train one from scratch"
            )
        check_upscaler_sizes(self.config)  # against the loaded model's noise levels and sizes
        return components

    def make_module(self, components: Components, process: NoiseProcess) -> nn.Module:
        return UpscalerModule(components, process, self.config.data.caption_dropout, self.config.upscaler)

    def training_data(self, dataset):
        if self.settings.latent_cache is not False and self.settings.crop is not None:
            warnings.warn("latent cache bypassed: upscaler.crop takes a new random crop every step; pictures are encoded every step", stacklevel=2)
            return dataset
        return super().training_data(dataset)

    def cache_extras(self) -> Optional[CacheExtras]:
        """The clean low-resolution picture (8-bit levels: exact), kept with the truth's latents;
        the degradations are drawn at every step."""
        factor = self.module.factor

        def compute(batch: dict) -> dict[str, torch.Tensor]:
            return {LOW_RES: to_uint8(downscale(batch["pixels"], factor))}  # (B, 3, h, w)

        return CacheExtras(compute, {LOW_RES: "bicubic-antialias", "factor": factor, "version": 1})

    def evaluate(self, step: int) -> dict:
        """A row per validation prompt: a held-out picture (its centre `crop`) downscaled (shown
        at the truth's size), its upscaling with the prompt, and the truth."""
        options = generate_options(self.config.validation, self.components.scheduler_config)
        upscaler, factor, crop = self.components.config.upscaler, self.module.factor, self.settings.crop

        def row(pipeline: Pipeline, prompt: str, sample: dict) -> list[Image.Image]:
            truth = center_square(sample["pixels"], crop)[None]  # (1, 3, H, W)
            low = downscale(truth, factor)
            upscaled = upscale(pipeline, prompt, low, upscaler, upscaler.noise_level, options)
            shown_low = to_pil(low)[0].resize(upscaled.size, Image.Resampling.NEAREST)
            return [shown_low, upscaled, to_pil(truth)[0]]

        return sample_grid(self.context, self.components, step, Grid(row, columns=3, samples=True))


def center_square(pixels: torch.Tensor, size: Optional[int]) -> torch.Tensor:
    """The centre `size` square of (3, H, W); None: all of it."""
    if size is None:
        return pixels
    height, width = pixels.shape[-2:]
    top, left = (height - size) // 2, (width - size) // 2
    return pixels[:, top : top + size, left : left + size]


@torch.no_grad()
def upscale(pipeline: Pipeline, prompt: str, low: torch.Tensor, upscaler: UpscalerConfig, noise_level: int, options: dict) -> Image.Image:
    """One low-resolution picture (1, 3, h, w) in [-1, 1] upscaled by the pipeline's upscaler,
    from the parts every mode shares (text, guidance, the sampling loop, decoding)."""
    components = pipeline.components
    device, dtype = components.device, components.dtype
    generators = make_generators([options["seed"]])
    low = low.to(device=device, dtype=dtype)
    levels = torch.tensor([noise_level], device=device)
    noise = torch.randn(low.shape, generator=generators[0]).to(low)
    picture = low_res_process(upscaler).noised(low, noise, levels)  # (1, 3, h, w)
    cond = pipeline.encode_text([prompt]).replace(concat=picture).with_vector("noise_level", levels)
    uncond = None
    if pipeline.two_passes(options["cfg"]):
        uncond = pipeline.encode_text([""]).replace(concat=picture).with_vector("noise_level", levels)
    height, width = (side * pipeline.vae_scale for side in low.shape[-2:])
    request = SampleRequest(
        cond, uncond, pipeline.noise(generators, width, height), options["steps"], options["cfg"], options["sampler"],
        generators, progress=False,
    )  # fmt: skip
    return to_pil(pipeline.decode(pipeline.sample(request)))[0]
