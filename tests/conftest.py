import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from tiny import BACKBONES, build_tiny  # noqa: E402

# Tiny models gain nothing from intra-op threads, and on a busy machine their spinning
# makes every op many times slower.
torch.set_num_threads(1)


@pytest.fixture(params=BACKBONES)
def backbone(request) -> str:
    """Each test that runs a denoiser runs for the U-Net and the DiT."""
    return request.param


@pytest.fixture
def tiny_components(backbone):
    return build_tiny(denoiser=backbone)


@pytest.fixture
def tiny_unet_components():
    """For comparisons with diffusers' Stable Diffusion folders, which hold a U-Net."""
    return build_tiny()


@pytest.fixture
def tiny_inpainting_components(backbone):
    """A 9-channel denoiser: latents + mask + masked-image latents, as SD2-inpainting."""
    return build_tiny(denoiser=backbone, **{f"{backbone}__in_channels": 9})


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_components):
    from ldm.formats.model_folder import save_model

    return save_model(tiny_components, tmp_path / "tiny-model")


@pytest.fixture(scope="session")
def saved_tiny_models(tmp_path_factory):
    """backbone -> its tiny model folder, saved once per session (same weights as tiny_components)."""
    from ldm.formats.model_folder import save_model

    folders = {}

    def folder(backbone: str):
        if backbone not in folders:
            folders[backbone] = save_model(build_tiny(denoiser=backbone), tmp_path_factory.mktemp(backbone) / "tiny-model")
        return folders[backbone]

    return folder


@pytest.fixture
def shared_tiny_model_dir(saved_tiny_models, backbone):
    """tiny_model_dir for tests that only read it: a module that never writes into it
    overrides tiny_model_dir with this (saves building and saving a model per test)."""
    return saved_tiny_models(backbone)


@pytest.fixture
def photo():
    """A 32x32 RGB picture (the tiny models' size) with structure, not just noise."""
    y, x = np.mgrid[0:32, 0:32]
    rng = np.random.default_rng(0)
    array = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1) + rng.integers(0, 24, (32, 32, 3))
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


@pytest.fixture
def square_mask():
    """White (repaint) square in the middle of a black 32x32 mask, on whole latent cells."""
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    return mask
