"""The hires fix with a diffusion upscaler model (--hires-upscaler NAME|DIR): the same as
generate, upscale with the prompt and seed, resize and img2img by hand; the model loads once;
names and folders that are not upscalers are one-line errors before anything loads."""

import numpy as np
import pytest
from PIL import Image
from tiny import build_tiny_upscaler

from ldm.formats.model_folder import save_model
from ldm.pipeline import Pipeline
from ldm.pipeline.upscalers import loaded_upscaler, upscaler_for
from ldm.settings import GenerationError, Settings, check_settings

STEPS, HIRES_STEPS, STRENGTH = 3, 2, 0.5


@pytest.fixture(scope="module")
def upscaler_folder(tmp_path_factory):
    return save_model(build_tiny_upscaler(), tmp_path_factory.mktemp("up") / "tiny-upscaler")


def test_a_model_hires_fix_equals_generate_upscale_resize_and_img2img(tiny_components, upscaler_folder):
    pipe = Pipeline(tiny_components)
    options = {"steps": STEPS, "sampler": "euler-a", "progress": False}
    hires = pipe.generate(
        "a cat", negative="fog", seed=5, n=2, hires_scale=2, hires_steps=HIRES_STEPS, hires_strength=STRENGTH,
        hires_upscaler=str(upscaler_folder), **options,
    )  # fmt: skip
    upscaler = Pipeline.load(upscaler_folder)
    for got, seed in zip(hires.images, (5, 6)):
        first = pipe.generate("a cat", negative="fog", seed=seed, **options).images[0]
        upscaled = upscaler.upscale(Settings(prompt="a cat", negative="fog", seed=seed), first, progress=False).images[0]
        second = upscaled.resize((64, 64), Image.LANCZOS)
        by_hand = pipe.img2img("a cat", second, STRENGTH, negative="fog", seed=seed, **{**options, "steps": int(HIRES_STEPS / STRENGTH)})
        assert got.size == (64, 64)
        # A batch of two against one at a time: float rounding may move a pixel's 8-bit value by 1.
        assert np.abs(np.asarray(got, dtype=int) - np.asarray(by_hand.images[0], dtype=int)).max() <= 1
    assert hires.parameters[0].fields()["Hires upscaler"] == str(upscaler_folder)


def test_the_upscaler_model_loads_once(tiny_components, upscaler_folder):
    pipe = Pipeline(tiny_components)
    loaded_upscaler.cache_clear()
    for seed in (1, 2):
        pipe.generate("a cat", seed=seed, steps=2, hires_scale=2, hires_steps=1, hires_upscaler=str(upscaler_folder), progress=False)
    assert loaded_upscaler.cache_info().misses == 1 and loaded_upscaler.cache_info().hits == 1


def test_the_registry_gives_model_names_a_model_upscaler(upscaler_folder):
    assert upscaler_for("Lanczos") is not upscaler_for(str(upscaler_folder))
    assert callable(upscaler_for(str(upscaler_folder)))


def test_a_folder_that_is_not_an_upscaler_is_a_one_line_error(tmp_path, tiny_components):
    plain = save_model(tiny_components, tmp_path / "plain")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    cases = {
        str(plain): "is not an upscaler (its model.yaml has no upscaler section)",
        str(broken): "is not an upscaler (its model_index.json names StableDiffusionPipeline)",
        str(tmp_path): "is not a model folder",
        "lanczoss": "unknown hires upscaler 'lanczoss'; choose one of latent,",
    }
    for name, message in cases.items():
        with pytest.raises(GenerationError, match="hires upscaler") as error:
            check_settings(Settings(prompt="a", hires_scale=2, hires_upscaler=name), "txt2img")
        assert message in str(error.value) and "\n" not in str(error.value)
