"""Stage `autoencoder`: the KL VAE of the latent diffusion paper. Loss: L1 reconstruction +
kl_weight * KL, and from step `disc_start` a patch discriminator (hinge loss). After
training, the latent scaling factor is measured (1 / std of latents) unless the config
fixes it, and PSNR/SSIM are reported on held-out images.

Not here (yet): the LPIPS perceptual term (its weights are a download) and the adaptive
discriminator weight; `disc_weight` is a fixed factor."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ldm.formats.model_folder import save_component
from ldm.metrics import psnr, ssim
from ldm.models.autoencoder import build_vae
from ldm.training.random_crops import crop_pictures
from ldm.training.stages import Stage, StageContext, first_samples


def patch_discriminator(channels: int, layers: int, in_channels: int = 3) -> nn.Sequential:
    """PatchGAN (pix2pix / taming-transformers' NLayerDiscriminator): one logit per patch.
    GroupNorm, not BatchNorm: no running statistics to synchronise or checkpoint."""
    modules: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
    width = channels
    for i in range(1, layers + 1):
        out = channels * min(2**i, 8)
        stride = 2 if i < layers else 1
        modules += [nn.Conv2d(width, out, 4, stride, 1, bias=False), nn.GroupNorm(min(32, out // 4), out), nn.LeakyReLU(0.2)]
        width = out
    modules.append(nn.Conv2d(width, 1, 4, 1, 1))  # (B, 1, h, w) patch logits
    return nn.Sequential(*modules)


class AutoencoderModule(nn.Module):
    def __init__(self, vae, discriminator, settings):
        super().__init__()
        self.vae = vae
        self.discriminator = discriminator
        self.settings = settings

    def forward(self, batch: dict, randomness, step: int):
        settings = self.settings
        pixels = batch["pixels"]  # (B, 3, H, W)
        if settings.crop is not None:
            pixels = crop_pictures(pixels, settings.crop, randomness)
        pixels = pixels.to(self.vae.device)
        posterior = self.vae.encode(pixels).latent_dist
        latents = posterior.mean + posterior.std * randomness.randn(posterior.mean.shape)  # (B, 4, H/f, W/f)
        reconstruction = self.vae.decode(latents).sample  # (B, 3, H, W)
        l1 = (pixels - reconstruction).abs().mean()
        # The paper sums both terms over elements; per pixel here, so kl_weight keeps its ratio.
        kl = posterior.kl().mean() / pixels[0].numel()
        loss = settings.l1_weight * l1 + settings.kl_weight * kl
        logs = {"l1": l1.detach(), "kl": kl.detach()}
        if self.discriminator is not None and settings.disc_start is not None and step >= settings.disc_start:
            # The generator term must not train the discriminator: call it with detached weights.
            frozen = {name: p.detach() for name, p in self.discriminator.named_parameters()}
            generator = -torch.func.functional_call(self.discriminator, frozen, (reconstruction,)).mean()
            real = self.discriminator(pixels)
            fake = self.discriminator(reconstruction.detach())
            discriminator = 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
            loss = loss + settings.disc_weight * generator + discriminator
            logs.update(generator=generator.detach(), discriminator=discriminator.detach())
        logs["loss"] = loss.detach()
        return loss, logs


class AutoencoderStage(Stage):
    find_unused_parameters = True  # the discriminator sits out the steps before disc_start

    def __init__(self, context: StageContext):
        super().__init__(context)
        settings = self.config.autoencoder
        self.vae = build_vae(self.config.model.vae)
        disc = None
        if settings.disc_start is not None:
            disc = patch_discriminator(settings.disc_channels, settings.disc_layers, self.config.model.vae.in_channels)
        self.module = AutoencoderModule(self.vae, disc, settings).to(context.device).train()

    @torch.no_grad()
    def reconstruct(self, pixels: torch.Tensor) -> torch.Tensor:
        posterior = self.vae.encode(pixels.to(self.vae.device)).latent_dist
        return self.vae.decode(posterior.mode()).sample.clamp(-1, 1)

    def evaluate(self, step: int) -> dict:
        samples = first_samples(self.context.open_dataset("validation"), self.config.autoencoder.eval_samples)
        if not samples:
            return {}  # no held-out images (data.validation: 0)
        self.vae.eval()
        try:
            pixels = torch.stack([s["pixels"] for s in samples]).to(self.vae.device)
            reconstruction = self.reconstruct(pixels)
        finally:
            self.vae.train()
        # The metrics take [0, 1] images; the decoder's output is clamped as a saved image would be.
        original, decoded = (pixels + 1) / 2, (reconstruction.clamp(-1, 1) + 1) / 2
        return {"validation_psnr": float(psnr(original, decoded).mean()), "validation_ssim": float(ssim(original, decoded).mean())}

    @torch.no_grad()
    def measure_scaling_factor(self) -> float:
        """1 / std of posterior samples of the first `scaling_samples` training images (what
        SD did to get 0.18215): scaled latents then have unit variance for the diffusion."""
        samples = first_samples(self.context.open_dataset("train"), self.config.autoencoder.scaling_samples)
        generator = torch.Generator().manual_seed(self.config.train.seed)
        latents = []
        self.vae.eval()
        for start in range(0, len(samples), self.config.train.batch_size):
            pixels = torch.stack([s["pixels"] for s in samples[start : start + self.config.train.batch_size]])
            posterior = self.vae.encode(pixels.to(self.vae.device)).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator).to(posterior.mean.device)
            latents.append((posterior.mean + posterior.std * noise).cpu())
        self.vae.train()
        return 1.0 / float(torch.cat(latents).std())

    def export(self) -> Path:
        vae_config = self.config.model.vae
        if vae_config.scaling_factor is None:
            vae_config = dataclasses.replace(vae_config, scaling_factor=self.measure_scaling_factor())
        self.vae.register_to_config(scaling_factor=vae_config.scaling_factor)
        return save_component(self.vae, "vae", vae_config, self.context.output_dir / "vae")
