import pytest
from tiny_controlnets import steering_controlnet


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


@pytest.fixture
def backbone() -> str:
    """ControlNets, LoRAs in SD's key layout and SD's single files are U-Net things."""
    return "unet"
