"""Tiny ControlNets for the control tests."""

import torch
from sd3_folder import JOINT_WIDTH, LATENT_CHANNELS
from sdxl_folder import PROJECTION


def steering_controlnet(components, seed: int):
    """A ControlNet from the tiny U-Net whose zero convolutions are not zero (as after some
    training), so that it changes the result and parity tests can fail."""
    from ldm.control.model import controlnet_from_unet

    net = controlnet_from_unet(components.denoiser, vae_scale=2, latent_channels=4)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return net.eval().requires_grad_(False)


def sd3_controlnet(seed: int = 1, force_zeros: bool = False, text: bool = True, **changes):
    """A ControlNet for the tiny SD3 folder's MMDiT whose zero-initialised parts are not zero
    (as after some training), so that it changes the result and parity tests can fail."""
    from diffusers import SD3ControlNetModel

    torch.manual_seed(seed)
    config = dict(sample_size=16, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, num_layers=1,
                  attention_head_dim=8, num_attention_heads=4, joint_attention_dim=JOINT_WIDTH if text else None,
                  caption_projection_dim=32, pooled_projection_dim=2 * PROJECTION, pos_embed_max_size=32,
                  force_zeros_for_pooled_projection=force_zeros)  # fmt: skip
    net = SD3ControlNetModel(**{**config, **changes})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.startswith(("controlnet_blocks", "pos_embed_input")):
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return net.eval().requires_grad_(False)
