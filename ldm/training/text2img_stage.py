"""Stage `text2img`: the denoiser (U-Net, DiT or MMDiT) learns to denoise latents of a frozen VAE, conditioned on a
frozen text encoder; eps or v targets, caption dropout (for classifier-free guidance),
optional min-SNR-gamma weighting, noise offset and zero-terminal-SNR schedules."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ldm.builtin_models import resolve_model
from ldm.config import ConfigError
from ldm.data.buckets import check_step
from ldm.formats.model_folder import ModelError, load_component, load_model, read_model_config, save_model
from ldm.models.components import Components, build_components
from ldm.diffusion.conditioning import Conditioning
from ldm.diffusion.denoiser import denoise_call
from ldm.diffusion.process import NoiseProcess, noise_process
from ldm.formats.diffusers_conversion import save_sdxl_folder
from ldm.formats.diffusers_export import save_diffusers_finetune
from ldm.formats.single_file import save_single_file
from ldm.training.config import DenoiserSection, Text2ImgSection
from ldm.training.size_conditioning import picture_sizes, size_cache_extras, takes_time_ids, with_training_sizes
from ldm.training.latents import CacheExtras, cached_latents, encode_in_full_precision
from ldm.training.loss_masks import LossMasks
from ldm.training.prior import ClassSamples, class_images
from ldm.training.stages import Stage, StageContext
from ldm.training.text_embeddings import TextEmbeddingMemory
from ldm.training.validation import Grid, generate_options, sample_grid


def load_frozen_parts(config, section: Optional[DenoiserSection] = None, name: str = "text2img") -> Components:
    """Components to train from: the section's init_from (ours, a diffusers SD folder, a single
    file or a built-in model's name), else the model config (text2img), with text2img's VAE /
    text encoder replaced by earlier stages' exports (vae_from, text_encoder_from). `section`
    is config.text2img unless given; `name` is the config section a load error names."""
    section = section or config.text2img
    components = load_init_from(config, section.init_from, name) if section.init_from else build_components(config.model)
    if isinstance(section, Text2ImgSection):
        if section.vae_from:
            components.vae, config.model.vae = load_component(section.vae_from, "vae")
        if section.text_encoder_from:
            components.first_text_encoder, config.model.text_encoder = load_component(section.text_encoder_from, "text_encoder")
    if components.config is not None:
        components.config = config.model
        if config.model.vae.scaling_factor is None:
            raise ConfigError(
                "model.vae.scaling_factor is null: train the autoencoder stage first (text2img.vae_from) "
                "or set it (0.18215 for Stable Diffusion's VAE)"
            )
    return components


def load_init_from(config, init_from: str, name: str) -> Components:
    """The model `init_from` names; its config (the folder's, or the single file's) replaces the
    YAML's `model`. A load error is one line naming the key (`lcm.init_from: ...`)."""
    path = resolve_model(init_from)  # a path, or a built-in model's name
    try:
        components = load_model(path)
        if components.config is not None:
            config.model = read_model_config(path) if Path(path).is_dir() else components.config
            components.config = config.model
    except ModelError as error:
        raise ModelError(f"{name}.init_from: {error}") from None
    return components


class Text2ImgModule(nn.Module):
    """Only the denoiser is a registered (trained, DDP-synchronised) submodule; the frozen VAE
    sits in a plain tuple and the text side in a plain object, so DDP and the checkpoints
    leave them alone."""

    def __init__(self, components: Components, process: NoiseProcess, caption_dropout: float, noise_offset: float, min_snr_gamma):
        super().__init__()
        self.denoiser = components.denoiser
        self.frozen = (components.vae,)
        self.conditioner = components.conditioner
        self.text_trains = False  # whether captions are encoded with gradients (a LoRA on the text side)
        self.process = process
        self.caption_dropout = caption_dropout
        self.noise_offset = noise_offset
        self.min_snr_gamma = min_snr_gamma
        self.text_memory = None  # a TextEmbeddingMemory when text2img.text_embedding_memory_mb > 0
        self.loss_masks = None  # a LossMasks when data.masked_loss (ldm.training.loss_masks)
        self.class_samples, self.prior_weight = None, 0.0  # prior preservation (ldm.training.prior)

    def latents(self, batch: dict, randomness) -> torch.Tensor:
        """Scaled latents sampled from the posterior: from the cache or by encoding pixels."""
        vae = self.frozen[0]
        if "latent_mean" in batch:
            mean, std = batch["latent_mean"].float(), batch["latent_std"].float()
        else:
            posterior = encode_in_full_precision(vae, batch["pixels"].to(self.denoiser.device))
            mean, std = posterior.mean, posterior.std
        mean, std = mean.to(self.denoiser.device), std.to(self.denoiser.device)
        return (mean + std * randomness.randn(mean.shape)) * vae.config.scaling_factor  # (B, 4, h, w)

    def context(self, captions: list[str], randomness) -> Conditioning:
        # Caption dropout here, not in the dataset: cached and streamed data then drop alike,
        # with the step's own randomness (so resumed and multi-process runs match).
        keep = randomness.rand((len(captions),)) >= self.caption_dropout
        return self.encode([c if k else "" for c, k in zip(captions, keep.tolist())])

    def encode(self, captions: list[str]) -> Conditioning:
        """The text side's conditioning of `captions`, as they are: remembered when the text
        side is frozen and the memory is on, with gradients when it trains."""
        device = self.denoiser.device
        if self.text_trains:
            return self.conditioner(captions, device)
        if self.text_memory is not None:
            return self.text_memory(captions, device)
        with torch.no_grad():
            return self.conditioner(captions, device)

    def noised(self, latents: torch.Tensor, randomness) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy latents, the eps or v target, timesteps) for clean `latents`."""
        b, c = latents.shape[:2]
        noise = randomness.randn(latents.shape)
        if self.noise_offset:
            noise = noise + self.noise_offset * randomness.randn((b, c, 1, 1))
        timesteps = self.sample_timesteps(b, randomness)
        return self.process.noised(latents, noise, timesteps), self.process.target(latents, noise, timesteps), timesteps

    def sample_timesteps(self, b: int, randomness) -> torch.Tensor:
        """(b,) training timesteps, drawn as the noise process draws them."""
        return self.process.sample_timesteps(b, randomness)

    def image_conditions(self, cond: Conditioning, noisy: torch.Tensor, batch: dict, randomness) -> Conditioning:
        """`cond` with what the denoiser reads of the image besides the noisy latents: nothing
        here (inpainting adds the mask and the masked image's latents as concatenated channels)."""
        return cond

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning, batch: dict, randomness):
        """The denoiser's eps or v prediction (controlnet adds its residuals here)."""
        return denoise_call(self.denoiser, noisy, timesteps, cond)

    def sample_losses(self, prediction, target, timesteps, pixel_weights=None) -> torch.Tensor:
        """(B,) weighted squared errors; `pixel_weights` (B, 1, h, w): masked loss's, None: 1."""
        errors = F.mse_loss(prediction.float(), target.float(), reduction="none")  # (B, C, h, w)
        if pixel_weights is not None:
            errors = errors * pixel_weights.to(errors)
        per_sample = errors.mean(dim=(1, 2, 3))  # (B,)
        weights = self.process.loss_weights(timesteps, self.min_snr_gamma).to(per_sample.device)  # (B,)
        return per_sample * weights

    def batch_losses(self, batch: dict, randomness) -> torch.Tensor:
        """(B,) losses of one batch: its noise, timesteps and caption dropout drawn from `randomness`."""
        latents = self.latents(batch, randomness)
        cond = self.context(list(batch["caption"]), randomness)
        noisy, target, timesteps = self.noised(latents, randomness)
        cond = with_training_sizes(self.image_conditions(cond, noisy, batch, randomness), batch, latents, self.frozen[0], self.denoiser)
        cond = cond.to(dtype=noisy.dtype)
        prediction = self.predict(noisy, self.process.model_time(timesteps), cond, batch, randomness)
        return self.sample_losses(prediction, target, timesteps, self.pixel_weights(batch, latents))

    def pixel_weights(self, batch: dict, latents: torch.Tensor):
        """Masked loss's (B, 1, h, w) weights of `batch` (data.masked_loss), else None."""
        if self.loss_masks is None or "key" not in batch:
            return None
        factor = 2 ** (len(self.frozen[0].config.block_out_channels) - 1)
        h, w = latents.shape[-2:]
        keys = list(batch["key"])
        return self.loss_masks(keys, (h * factor, w * factor), (h, w), picture_sizes(batch, len(keys))).to(latents.device)

    def forward(self, batch: dict, randomness, step: int):
        loss = self.batch_losses(batch, randomness).mean()
        if self.class_samples is None:
            return loss, {"loss": loss.detach()}
        # Prior preservation: as many class images as data samples, their loss weighted beside.
        class_batch = self.class_samples.batch(randomness, len(batch["caption"]))
        class_loss = self.batch_losses(class_batch, randomness).mean()
        total = loss + self.prior_weight * class_loss
        return total, {"loss": total.detach(), "instance_loss": loss.detach(), "class_loss": class_loss.detach()}


class Text2ImgStage(Stage):
    def __init__(self, context: StageContext):
        super().__init__(context)
        config = self.config
        self.components = self.load_components()
        components = self.components
        check_step(config.data.buckets, config.data.resolution, 2 ** (len(components.vae.config.block_out_channels) - 1))
        components.to(device=context.device)
        for part in (components.vae, *components.text_encoders):
            part.eval().requires_grad_(False)
        # Prior preservation's class images are drawn by the base model, before anything trains.
        prior_files = class_images(config, components, context.output_dir, context.rank, context.world_size) if config.prior.enabled else None
        components.denoiser.train().requires_grad_(True)
        if config.train.gradient_checkpointing:
            components.denoiser.enable_gradient_checkpointing()
        self.module = self.make_module(components, noise_process(components.scheduler_config))
        self.module.loss_masks = LossMasks.of(config.data)
        if prior_files is not None:
            self.module.class_samples, self.module.prior_weight = ClassSamples.of(config, prior_files), config.prior.weight
        memory_mb = self.settings.text_embedding_memory_mb
        if memory_mb:
            self.module.text_memory = TextEmbeddingMemory(components.conditioner, int(memory_mb * 2**20))

    # Hooks for stages that fine-tune the same way (inpaint).
    @property
    def section(self) -> DenoiserSection:
        """The stage's config section (config.lcm for stage lcm): its init_from is the model to start from."""
        return getattr(self.config, self.config.stage)

    @property
    def settings(self) -> Text2ImgSection:
        """Where the loss, cache and text memory settings are read: the text2img section (the
        upscaler stage has its own)."""
        return self.config.text2img

    def load_components(self) -> Components:
        return load_frozen_parts(self.config, self.section, self.config.stage)

    def make_module(self, components: Components, process: NoiseProcess) -> nn.Module:
        config = self.config
        return Text2ImgModule(
            components, process, config.data.caption_dropout, self.settings.noise_offset, self.settings.min_snr_gamma
        )

    def compiled_parts(self) -> list[nn.Module]:
        return [self.components.denoiser]

    # ------------------------------------------------------------------ data

    def training_data(self, dataset):
        cache = self.settings.latent_cache
        if cache is False:
            return dataset
        directory = Path(cache) if isinstance(cache, str) else self.context.output_dir / "latent_cache"
        return cached_latents(dataset, self.components.vae, directory, self.config, self.context, self.cache_extras())

    def cache_extras(self) -> Optional[CacheExtras]:
        """What else the latent cache keeps per sample (ControlNet: its control maps; an SDXL
        U-Net: each sample's original size and crop)."""
        return size_cache_extras() if takes_time_ids(self.components.denoiser) else None

    # ------------------------------------------------------------------ outputs

    def evaluate(self, step: int) -> dict:
        """One image per validation prompt."""
        options = generate_options(self.config.validation, self.components.scheduler_config)
        return sample_grid(self.context, self.components, step, Grid(lambda pipeline, prompt, _: [pipeline.generate(prompt, **options).images[0]]))

    def export(self) -> Path:
        path = self.context.output_dir / "model"
        if self.components.config is None:
            source = Path(self.section.init_from)
            if source.is_file():  # a single file's fine-tune is one too, in the same original layout
                return save_single_file(self.components, path.with_suffix(".safetensors"))
            return save_diffusers_finetune(self.components.denoiser, source, path)
        if self.components.config.sdxl is not None:  # transformers text models: SDXL's own folder layout
            return save_sdxl_folder(self.components, path)
        return save_model(self.components, path)
