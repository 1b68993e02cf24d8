"""The demo model shipped in the package: present, loads, generates, and is the default."""

import numpy as np
import pytest

from ldm.default_model import default_model_path
from ldm.pipeline import Pipeline


@pytest.fixture(scope="module")
def demo():
    path = default_model_path()
    assert path is not None, "ldm/weights/scenes is missing: the package must ship its demo model"
    return Pipeline.load(path)


def test_shipped_weights_are_small_fp16_safetensors():
    path = default_model_path()
    files = sorted(p.name for p in path.glob("*.safetensors"))
    assert files == ["text_encoder.safetensors", "unet.safetensors", "vae.safetensors"]
    assert sum(p.stat().st_size for p in path.iterdir()) <= 40 * 2**20
    from safetensors import safe_open

    with safe_open(str(path / "unet.safetensors"), "pt") as handle:
        assert handle.get_tensor(next(iter(handle.keys()))).dtype.is_floating_point
        assert str(handle.get_tensor(next(iter(handle.keys()))).dtype) == "torch.float16"


def test_demo_model_generates_a_finite_128px_image(demo):
    result = demo.generate("a lake at dawn", steps=4, seed=0, progress=False)
    image = np.asarray(result.images[0])
    assert image.shape == (128, 128, 3)
    assert image.std() > 5  # a picture, not a flat colour


def test_generate_without_model_uses_the_demo(tmp_path):
    from ldm.cli.generate import main

    assert main(["a meadow at noon", "--steps", "2", "--seed", "1", "--out", str(tmp_path / "m.png"), "--quiet"]) == 0
    assert (tmp_path / "m.png").is_file()
