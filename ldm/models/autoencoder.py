"""The KL autoencoder (stage 1): diffusers AutoencoderKL built from our config."""

from __future__ import annotations

from diffusers import AutoencoderKL

from ldm.config import VAEConfig


def build_vae(config: VAEConfig) -> AutoencoderKL:
    blocks = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=["DownEncoderBlock2D"] * blocks,
        up_block_types=["UpDecoderBlock2D"] * blocks,
        block_out_channels=list(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels,
        norm_num_groups=config.norm_num_groups,
        sample_size=config.sample_size,
        # Not yet measured (autoencoder stage fills it in): identity scale until then.
        scaling_factor=config.scaling_factor if config.scaling_factor is not None else 1.0,
        shift_factor=config.shift_factor,
    )


def _shift(vae) -> float | None:
    """The VAE's latent shift (SD3's 16-channel VAE has one; older VAEs' config has None)."""
    return getattr(vae.config, "shift_factor", None)


def to_vae_latents(vae, latents):
    """The denoiser's latents -> what the VAE decodes: divided by scaling_factor, the shift added back."""
    shift = _shift(vae)
    latents = latents / vae.config.scaling_factor
    return latents if shift is None else latents + shift


def from_vae_latents(vae, latents):
    """What the VAE encodes -> the denoiser's latents: the shift taken off, times scaling_factor."""
    shift = _shift(vae)
    return (latents if shift is None else latents - shift) * vae.config.scaling_factor
