"""Upscaler models: loading (ours and diffusers' x4-upscaler folders), refusals in one line,
tiles that agree with an untiled upscale, and generate-then-upscale's parameters."""

import json

import numpy as np
import pytest
import yaml
from diffusers import StableDiffusionUpscalePipeline
from PIL import Image

from ldm.formats.model_folder import ModelError, load_model, save_model
from ldm.pipeline import Pipeline, make_generators
from ldm.pipeline.upscale_tiles import blend, tile_boxes
from ldm.png_info import parse_parameters
from ldm.settings import GenerationError, Limits
from reference import LastLatents
from sd_folder import write_tiny_upscaler_folder
from tiny import build_tiny_upscaler


@pytest.fixture(scope="module")
def upscaler():
    return build_tiny_upscaler()


def picture(width: int, height: int, seed: int = 3) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 40, (height, width, 3))
    return Image.fromarray((np.stack([x * 5, y * 6, (x + y) * 2], axis=-1) + noise).clip(0, 255).astype(np.uint8))


def test_our_upscaler_folder_saves_and_loads(tmp_path, upscaler, tiny_unet_components):
    folder = save_model(upscaler, tmp_path / "up")
    assert yaml.safe_load((folder / "model.yaml").read_text())["model"]["upscaler"]["max_noise_level"] == 350
    loaded = load_model(folder)
    assert loaded.upscaler == upscaler.upscaler
    first = Pipeline(upscaler).upscale("a lake", picture(16, 16), steps=2, seed=1, progress=False).images[0]
    again = Pipeline(loaded).upscale("a lake", picture(16, 16), steps=2, seed=1, progress=False).images[0]
    assert np.array_equal(np.asarray(first), np.asarray(again))
    # Every other model's model.yaml reads as before upscalers: no `upscaler: null`.
    plain = save_model(tiny_unet_components, tmp_path / "plain")
    assert "upscaler" not in yaml.safe_load((plain / "model.yaml").read_text())["model"]
    assert load_model(plain).upscaler is None


def test_a_diffusers_x4_upscaler_folder_loads_and_matches_its_pipeline(tmp_path, upscaler):
    """Offline, safetensors only; the prompt through the folder's own CLIP, end to end."""
    folder = write_tiny_upscaler_folder(upscaler, tmp_path)
    loaded = load_model(folder)
    assert loaded.config is None and loaded.upscaler == upscaler.upscaler
    low_res, last = picture(24, 16), LastLatents()
    ours = Pipeline(loaded).upscale("a red boat", low_res, negative="fog", steps=3, cfg=4.0, sampler="ddim",
                                    seed=2, noise_level=30, callback=last, progress=False)  # fmt: skip
    reference = StableDiffusionUpscalePipeline.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    reference.set_progress_bar_config(disable=True)  # its scheduler is our ddim's (sd_folder)
    theirs = reference("a red boat", image=low_res, negative_prompt="fog", num_inference_steps=3, guidance_scale=4.0,
                       noise_level=30, generator=make_generators([2]), output_type="latent").images  # fmt: skip
    assert (last.latents - theirs).abs().max().item() < 1e-4
    assert ours.images[0].size == (96, 64)


def test_an_upscaler_folder_without_class_labels_is_refused(tmp_path, upscaler):
    folder = write_tiny_upscaler_folder(upscaler, tmp_path)
    (folder / "model_index.json").write_text(json.dumps({**json.loads((folder / "model_index.json").read_text()), "max_noise_level": 400}))
    with pytest.raises(ModelError, match="no class label for every noise level up to 400"):
        load_model(folder)


def test_an_upscaler_folder_without_its_low_res_scheduler_is_refused(tmp_path, upscaler):
    folder = write_tiny_upscaler_folder(upscaler, tmp_path)
    (folder / "low_res_scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(ModelError, match="scheduler_config.json is missing"):
        load_model(folder)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda pipe: pipe.generate("a lake", steps=1), "this model is an upscaler"),
        (lambda pipe: pipe.img2img("a lake", picture(16, 16), steps=1), "this model is an upscaler"),
        (lambda pipe: pipe.inpaint("a lake", picture(16, 16), Image.new("L", (16, 16), 255), steps=1), "this model is an upscaler"),
        (lambda pipe: pipe.upscale("a lake", picture(1, 1)), "input picture 1x1 is too small to upscale"),
        (lambda pipe: pipe.upscale("a lake", picture(16, 16), noise_level=351), "between 0 and this model's max_noise_level 350"),
        (lambda pipe: pipe.upscale("a lake", picture(16, 16), noise_level=-1), "noise level must be 0 or more"),
        (lambda pipe: pipe.upscale("a lake", picture(16, 16), tile=4), "tile must be at least 16"),
        (lambda pipe: pipe.upscale("a lake", picture(64, 64), limits=Limits(max_pixels=200 * 200)), "upscaled image \\(x4\\) 256x256"),
    ],
)
def test_misuse_is_one_line(upscaler, call, message):
    with pytest.raises(GenerationError, match=message) as error:
        call(Pipeline(upscaler))
    assert "\n" not in str(error.value)


def test_a_model_that_is_not_an_upscaler_is_refused(tiny_unet_components):
    with pytest.raises(GenerationError, match="model tiny is not an upscaler"):
        Pipeline(tiny_unet_components).upscale("a lake", picture(16, 16))


def test_tiles_cover_the_picture_and_overlap():
    boxes = tile_boxes((64, 40), 32, 8)
    assert boxes == [(0, 0, 32, 32), (16, 0, 48, 32), (32, 0, 64, 32), (0, 8, 32, 40), (16, 8, 48, 40), (32, 8, 64, 40)]
    assert tile_boxes((20, 20), 32, 8) == [(0, 0, 20, 20)]
    # Tiles that agree blend back to the same picture exactly: the weights sum to one.
    whole = picture(64, 40)
    pieces = [whole.crop(box) for box in boxes]
    assert np.array_equal(np.asarray(blend(pieces, boxes, whole.size)), np.asarray(whole))


def test_a_tiled_upscale_agrees_with_an_untiled_one(upscaler):
    """The tiles' noise is the whole picture's: with a deterministic sampler only what each
    tile's denoiser cannot see differs. Measured on this random tiny model: mean 1.2, 99th
    percentile 5 levels of 255; no seam (the gradient across the tile edges as untiled)."""
    pipe, low_res = Pipeline(upscaler), picture(48, 32)
    options = dict(steps=4, seed=1, sampler="dpm++2m", progress=False)
    whole = np.asarray(pipe.upscale("a lake", low_res, **options).images[0], dtype=float)
    result = pipe.upscale("a lake", low_res, tile=24, **options)
    tiled = np.asarray(result.images[0], dtype=float)
    assert "upscaled in 6 tiles of 24 px (x4)" in result.notes
    assert result.parameters[0].fields()["Tile size"] == "24" and result.images[0].size == (192, 128)
    error = np.abs(tiled - whole)
    assert error.mean() < 3 and np.percentile(error, 99) < 12
    for axis in (0, 1):  # the mean step between neighbouring rows (columns) is the untiled one's
        steps_tiled = np.abs(np.diff(tiled, axis=axis)).mean(axis=(1 - axis, 2))
        steps_whole = np.abs(np.diff(whole, axis=axis)).mean(axis=(1 - axis, 2))
        assert (steps_tiled / steps_whole).max() < 1.25


def test_generate_then_upscale_records_both(upscaler, tiny_unet_components):
    drawn = Pipeline(tiny_unet_components).generate("a lake", steps=2, seed=5, n=2, width=16, height=16, progress=False)
    result = Pipeline(upscaler).upscale_result(drawn, steps=2, noise_level=10, progress=False)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    fields = parse_parameters(result.parameters[1].to_text())
    assert (fields["Seed"], fields["Size"], fields["Model"]) == ("6", "16x16", "tiny")
    assert (fields["Upscaler"], fields["Upscaled size"], fields["Noise level"], fields["Upscale steps"]) == ("tiny", "64x64", "10", "2")
    alone = Pipeline(upscaler).upscale("a lake", drawn.images[1], steps=2, seed=6, noise_level=10, progress=False)
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(result.images[1]))
