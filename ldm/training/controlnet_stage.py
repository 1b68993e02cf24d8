"""Stage `controlnet`: a ControlNet (diffusers ControlNetModel.from_unet for a U-Net; an
SD3ControlNetModel from an MMDiT's first blocks: ldm.control.sd3_model) learns to steer a
frozen text-to-image model with control images. Its zero convolutions make step 0 the base
model exactly. Control images come from a folder of maps named after the samples' keys
(controlnet.control_dir), from the data (a column or key), or from the preprocessor run on
each training image; the last two are kept with the latents in the latent cache. Text and
control are each dropped (data.caption_dropout, controlnet.control_dropout) so that
guidance works with and without either. Noise, targets, loss, EMA, resume: text2img's."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from PIL import Image
from torch import nn

from ldm.config import ConfigError
from ldm.control.library import ControlNets
from ldm.control.model import controlnet_from_unet, save_controlnet
from ldm.control.prepare import control_input, control_map
from ldm.control.sd3 import block_samples, control_latents, is_sd3_controlnet
from ldm.control.sd3_model import controlnet_from_mmdit
from ldm.control.units import ControlUnit
from ldm.data.control_images import crop_as_picture
from ldm.data.transforms import ImageTransform
from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.backbones.unet import size_conditioning, takes_size_conditioning
from ldm.diffusion.process import NoiseProcess
from ldm.images import ImageError, load_image, to_pil
from ldm.models.components import Components
from ldm.training.latents import CacheExtras
from ldm.training.size_conditioning import picture_sizes
from ldm.training.text2img_stage import Text2ImgModule, Text2ImgStage
from ldm.training.validation import Grid, generate_options, sample_grid


CACHED = "control_map"  # a batch's control images as the latent cache keeps them: uint8 (B, 3, H, W)


class ControlImages:
    """A batch's control images: the maps the data carries (data.control_column /
    control_key, already cropped with their images), or those in `control_dir` named after
    the samples' keys (KEY.png), else the preprocessor's output from the samples' own pixels.

    A map is the control image already: it is only resized to its picture's size and cropped
    as the picture was (the data's centre crop at `resolution`, or to the sample's aspect-ratio
    bucket: ldm.data.control_images.crop_as_picture, the data's own maps' path) and, for layouts, snapped to the region colours; running
    the preprocessor on it again would train on something else (Canny on an edge map
    draws both flanks of every edge)."""

    def __init__(self, control_type: str, control_dir: Optional[Path], resolution: int = 0):
        self.control_type = control_type
        self.control_dir = control_dir
        self.crop = ImageTransform(resolution) if resolution else None

    def reader(self, batch: dict) -> str:
        """The preprocessor `batch`'s pictures go through: the control type for pixels; for a
        stored map, layout's snapping (idempotent) or nothing."""
        if "control" not in batch and self.control_dir is None:
            return self.control_type
        return "layout" if self.control_type == "layout" else "raw"

    def pictures(self, batch: dict, size: tuple[int, int]) -> list[Image.Image]:
        """The batch's control pictures, `size` (W, H) for those this crops."""
        if "control" in batch:
            return to_pil(batch["control"])
        if self.control_dir is None:
            return to_pil(batch["pixels"])
        keys = list(batch["key"])
        try:
            maps = [load_image(self.control_dir / Path(key).with_suffix(".png"), "control map") for key in keys]
        except ImageError as error:
            raise ValueError(f"controlnet.control_dir: {error}") from None
        if self.crop is None:
            return maps
        sizes = picture_sizes(batch, len(keys))
        return [to_pil(crop_as_picture(map_, picture or map_.size, self.crop, None, size)[None])[0] for map_, picture in zip(maps, sizes)]

    def __call__(self, batch: dict, size: tuple[int, int]) -> torch.Tensor:
        if CACHED in batch:
            return batch[CACHED].float() / 255  # the maps this returned when the cache was built
        inputs = [control_input(self.reader(batch), picture, size) for picture in self.pictures(batch, size)]
        return torch.cat(inputs)  # (B, 3, H, W) in [0, 1]

    def cache_extras(self, maps_from: str) -> CacheExtras:
        """The control maps (uint8, exact: every preprocessor's output is an 8-bit picture),
        computed once with the latents instead of at every step. `maps_from`: the data's
        column/key, or "preprocessor"; part of the cache key with the control type."""

        def compute(batch: dict) -> dict[str, torch.Tensor]:
            size = tuple(batch["pixels"].shape[-1:-3:-1])  # (W, H)
            return {CACHED: (self(batch, size) * 255).round().to(torch.uint8)}  # (B, 3, H, W)

        return CacheExtras(compute, {CACHED: self.control_type, "maps_from": maps_from, "version": 1})


class ControlNetModule(Text2ImgModule):
    """The frozen U-Net stays a submodule (its call is part of the loss) but trains nothing:
    only the ControlNet's parameters require gradients, so only they are checkpointed."""

    def __init__(
        self, components: Components, controlnet, process: NoiseProcess, text2img, caption_dropout, control_images, control_dropout, timesteps="uniform"
    ):
        super().__init__(components, process, caption_dropout, text2img.noise_offset, text2img.min_snr_gamma)
        self.timestep_sampling = timesteps
        self.controlnet = controlnet
        self.control_images = control_images
        self.control_dropout = control_dropout
        self.vae_scale = 2 ** (len(components.vae.config.block_out_channels) - 1)

    def sample_timesteps(self, b: int, randomness) -> torch.Tensor:
        """`cubic` (T2I-Adapter's sampling): t = T (1 - u^3), most steps at high noise, where
        the layout of an image is decided and a control map can change the loss."""
        if self.timestep_sampling == "uniform":
            return super().sample_timesteps(b, randomness)
        u = randomness.rand((b,))
        return self.process.timesteps_at(1 - u**3)

    def predict(self, noisy, timesteps, cond, batch, randomness):
        height, width = (side * self.vae_scale for side in noisy.shape[-2:])
        control = self.control_images(batch, (width, height)).to(noisy)  # (B, 3, H, W)
        keep = randomness.rand((len(control),)) >= self.control_dropout  # (B,)
        control = control * keep.to(control)[:, None, None, None]  # dropped: a blank map
        if is_sd3_controlnet(self.controlnet.config):  # an MMDiT's: the control image as latents, block samples
            samples = block_samples(self.controlnet, noisy, timesteps, cond, control_latents(self.frozen[0], self.controlnet.config, control), 1.0)
            return backbone_of(self.denoiser)(noisy, timesteps, cond, samples)
        # An SDXL U-Net and its ControlNet both read the pooled text and the size ids.
        added = size_conditioning(cond) if takes_size_conditioning(self.controlnet.config) else {}
        down, mid = self.controlnet(
            noisy, timesteps, encoder_hidden_states=cond.tokens, controlnet_cond=control, return_dict=False, **added
        )
        return self.denoiser(
            noisy, timesteps, encoder_hidden_states=cond.tokens,
            down_block_additional_residuals=down, mid_block_additional_residual=mid, **added,
        ).sample  # fmt: skip


def new_controlnet(components: Components, vae_scale: int):
    """A fresh ControlNet for the model's denoiser: from a U-Net's encoder, or an MMDiT's first
    joint blocks (an SD3 ControlNet); a ConfigError for a denoiser no ControlNet steers."""
    backbone = backbone_of(components.denoiser)
    if backbone.kind == "mmdit":
        return controlnet_from_mmdit(backbone.inner)
    if not backbone.supports_controlnet:
        raise ConfigError(f"controlnet.init_from: ControlNets steer U-Net and MMDiT models; this model's denoiser is {backbone.described}")
    return controlnet_from_unet(components.denoiser, vae_scale, components.vae.config.latent_channels)


class ControlNetStage(Text2ImgStage):
    def make_module(self, components: Components, process: NoiseProcess) -> nn.Module:
        config, section = self.config, self.config.controlnet
        components.denoiser.eval().requires_grad_(False)
        vae_scale = 2 ** (len(components.vae.config.block_out_channels) - 1)
        self.controlnet = new_controlnet(components, vae_scale)
        self.controlnet.to(self.context.device).train()
        if config.train.gradient_checkpointing:
            self.controlnet.enable_gradient_checkpointing()
        control_dir = Path(section.control_dir) if section.control_dir else None
        self.control_images = ControlImages(section.control_type, control_dir, config.data.resolution)
        return ControlNetModule(
            components, self.controlnet, process, config.text2img, config.data.caption_dropout,
            self.control_images, section.control_dropout, section.timesteps,
        )  # fmt: skip

    def compiled_parts(self) -> list[nn.Module]:
        return [self.components.denoiser, self.controlnet]

    @property
    def name(self) -> str:
        return self.config.controlnet.name or self.config.controlnet.control_type

    def cache_extras(self) -> Optional[CacheExtras]:
        """Maps from a control_dir are read by key at each step (cheap); the preprocessor's
        and those the data carries are kept in the latent cache."""
        if self.control_images.control_dir is not None:
            return None
        data = self.config.data
        return self.control_images.cache_extras(data.control_column or data.control_key or "preprocessor")

    def evaluate(self, step: int) -> dict:
        """A row per validation prompt: the control map, the image made with it, the image
        made without it (same seed), and the map laid over the controlled image."""
        options = generate_options(self.config.validation, self.components.scheduler_config)

        def row(pipeline, prompt: str, sample: dict) -> list[Image.Image]:
            batch = {name: value[None] if isinstance(value, torch.Tensor) else [value] for name, value in sample.items()}
            size = tuple(sample["pixels"].shape[-1:-3:-1])  # (W, H)
            picture = self.control_images.pictures(batch, size)[0]
            control = control_map(self.control_images.reader(batch), picture, size)
            unit = ControlUnit(control, "raw", model=self.name)
            steered = pipeline.generate(prompt, controls=(unit,), width=size[0], height=size[1], **options).images[0]
            plain = pipeline.generate(prompt, width=size[0], height=size[1], **options).images[0]
            return [control, steered, plain, Image.blend(steered, control, 0.4)]

        controlnets = ControlNets.of(**{self.name: (self.control_images.control_type, self.controlnet)})
        grid = Grid(row, columns=4, samples=True, trained=self.controlnet, controlnets=controlnets)
        return sample_grid(self.context, self.components, step, grid)

    def export(self) -> Path:
        path = self.context.output_dir / "controlnet" / self.name
        return save_controlnet(self.controlnet, self.config.controlnet.control_type, path)
