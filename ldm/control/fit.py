"""Whether a ControlNet can steer a model, told from the two configs before any sampling
(a ControlNet made for another model otherwise fails inside the U-Net's forward, steps in):
it must be of the model's family (SD3, an MMDiT's: ldm.control.sd3_fit; SDXL, reading the
pooled text and size ids; or SD 1.x/2.x); a U-Net ControlNet's residuals must match the
U-Net's skip connections one for one, it must read the same latents and text, and its
control-image embedding must land on the latent grid."""

from __future__ import annotations

from typing import Optional

from ldm.control.sd3 import is_sd3_controlnet
from ldm.control.sd3_fit import sd3_mismatch
from ldm.diffusion.backbones import backbone_of
from ldm.diffusion.backbones.unet import takes_size_conditioning


def skip_channels(config) -> list[int]:
    """Channels of the skip connections a U-Net adds ControlNet residuals to, in order:
    conv_in's, each resnet's, each downsampler's (none after the last block). A
    ControlNet's residuals come in the same order from the same config fields."""
    widths = list(config.block_out_channels)
    layers = config.layers_per_block
    per_block = list(layers) if isinstance(layers, (list, tuple)) else [layers] * len(widths)
    channels = [widths[0]]
    for k, (width, count) in enumerate(zip(widths, per_block)):
        channels += [width] * (count + (k < len(widths) - 1))
    return channels


def blocks(config) -> str:
    return f"block_out_channels {list(config.block_out_channels)}, layers_per_block {config.layers_per_block}"


def controlnet_mismatch(controlnet_config, components) -> Optional[str]:
    """Why a ControlNet with `controlnet_config` cannot steer `components`; None when it can."""
    backbone = backbone_of(components.denoiser)
    if not backbone.supports_controlnet:
        return f"ControlNets steer U-Net and MMDiT models; this model's denoiser is {backbone.described}"
    unet = components.denoiser.config
    vae = components.vae.config
    family = family_mismatch(controlnet_config, unet, backbone.kind)
    if family or backbone.kind == "mmdit":
        return family or sd3_mismatch(controlnet_config, unet, vae.latent_channels)
    if skip_channels(controlnet_config) != skip_channels(unet):
        return f"its config has {blocks(controlnet_config)}; this model's U-Net {blocks(unet)}"
    if controlnet_config.cross_attention_dim != unet.cross_attention_dim:
        return f"it reads text {controlnet_config.cross_attention_dim} wide; this model's is {unet.cross_attention_dim}"
    if controlnet_config.in_channels != vae.latent_channels:
        return f"it reads {controlnet_config.in_channels} latent channels; this model has {vae.latent_channels}"
    control_scale = 2 ** (len(controlnet_config.conditioning_embedding_out_channels) - 1)
    vae_scale = 2 ** (len(vae.block_out_channels) - 1)
    if control_scale != vae_scale:
        return f"it shrinks control images {control_scale}x; this model's latents are {vae_scale}x smaller than its pictures"
    return None


def family_of(config, kind: str = "unet") -> str:
    """The family of a ControlNet's config (kind "unet") or of a `kind` denoiser's config."""
    if kind == "mmdit" or is_sd3_controlnet(config):
        return "SD3"
    return "SDXL" if takes_size_conditioning(config) else "SD 1.x/2.x"


def family_mismatch(controlnet_config, unet_config, kind: str = "unet") -> Optional[str]:
    """A ControlNet of another family than the model's (an SD 1.x/2.x ControlNet on an SDXL
    or SD3 model, and every other pair; told before the block shapes, which differ too), or
    an SDXL ControlNet whose pooled-text-and-size embedding is not the U-Net's."""
    ours, theirs = family_of(unet_config, kind), family_of(controlnet_config)
    if ours != theirs:
        return f"it is an {theirs} ControlNet; this model is {ours}"
    width, unet_width = (getattr(c, "projection_class_embeddings_input_dim", None) for c in (controlnet_config, unet_config))
    if ours == "SDXL" and width != unet_width:
        return f"it reads pooled text and size ids {width} wide; this model's U-Net reads them {unet_width} wide"
    return None
