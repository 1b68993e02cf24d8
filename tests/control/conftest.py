import pytest
import torch


def steering_controlnet(components, seed: int):
    """A ControlNet from the tiny U-Net whose zero convolutions are not zero (as after some
    training), so that it changes the result and parity tests can fail."""
    from ldm.control.model import controlnet_from_unet

    net = controlnet_from_unet(components.unet, vae_scale=2, latent_channels=4)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block", "controlnet_cond_embedding.conv_out")):
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return net.eval().requires_grad_(False)


@pytest.fixture
def controlnet(tiny_components):
    return steering_controlnet(tiny_components, 1)


@pytest.fixture
def second_controlnet(tiny_components):
    return steering_controlnet(tiny_components, 2)


@pytest.fixture
def edges():
    """A 32x32 control map: white lines on black."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (32, 32))
    draw = ImageDraw.Draw(image)
    draw.line([(2, 4), (29, 20)], fill="white", width=2)
    draw.rectangle([8, 18, 20, 28], outline="white")
    return image
