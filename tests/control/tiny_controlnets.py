"""Tiny ControlNets for the control tests."""

import torch


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
