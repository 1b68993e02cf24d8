"""The demo model shipped in the package: present, loads, generates, and is the default."""

import numpy as np
import pytest

from ldm.default_model import default_model_path
from ldm.pipeline import Pipeline


@pytest.fixture(scope="module")
def demo():
    path = default_model_path()
    assert path is not None, "ldm/weights/scenes is missing: the package must ship its demo model"
    return Pipeline.load()  # no path: the built-in model


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


def test_inpaint_without_model_uses_the_demo(tmp_path):
    from PIL import Image

    from ldm.cli.inpaint import main

    Image.new("RGB", (128, 128), (40, 90, 200)).save(tmp_path / "in.png")
    mask = Image.new("L", (128, 128), 0)
    mask.paste(255, (32, 32, 96, 96))
    mask.save(tmp_path / "mask.png")
    args = ["a red boat", "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png")]
    assert main([*args, "--steps", "2", "--seed", "1", "--out", str(tmp_path / "out.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "out.png").size == (128, 128)
