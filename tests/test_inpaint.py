"""Inpainting and outpainting: modes of the one sampling loop, checked against diffusers'
StableDiffusionInpaintPipeline (4- and 9-channel U-Nets), then composited in pixel space."""

import numpy as np
import pytest
import torch
from PIL import Image
from reference import LastLatents, diffusers_pipeline

from ldm.diffusion.samplers import DDPM_SAMPLER_NAMES
from ldm.masks import crop_box
from ldm.settings import GenerationError
from ldm.pipeline import Pipeline, make_generators
from ldm.png_info import parse_parameters

STEPS = 4
MODELS = {4: "tiny_components", 9: "tiny_inpainting_components"}  # fixtures, by denoiser input channels


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.mark.parametrize("strength", [1.0, 0.5])
@pytest.mark.parametrize("sampler", DDPM_SAMPLER_NAMES)
@pytest.mark.parametrize("unet_channels", [4, 9])
def test_matches_diffusers_inpaint(request, backbone, photo, unet_channels, sampler, strength):
    from diffusers import StableDiffusionInpaintPipeline

    components = request.getfixturevalue(MODELS[unet_channels])
    pipe = Pipeline(components)
    # A mask edge that is not on a latent cell: the nearest-neighbour downsampling must match too.
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (5, 9, 22, 27))
    reference = diffusers_pipeline(StableDiffusionInpaintPipeline, components, sampler)
    expected = reference(
        prompt_embeds=pipe.encode_text(["a cat"]).tokens,
        negative_prompt_embeds=pipe.encode_text([""]).tokens,
        image=photo,
        mask_image=mask,
        height=32,
        width=32,
        strength=strength,
        num_inference_steps=STEPS,
        guidance_scale=7.5,
        generator=make_generators([3]),
        output_type="latent",
    ).images
    last = LastLatents()
    pipe.inpaint("a cat", photo, mask, strength, mask_blur=0, steps=STEPS, sampler=sampler, seed=3, callback=last, progress=False)
    assert torch.allclose(last.latents, expected, rtol=0, atol=1e-4), (last.latents - expected).abs().max()


@pytest.mark.parametrize("unet_channels", [4, 9])
def test_outside_the_mask_pixels_are_the_input_exactly(request, backbone, photo, square_mask, unet_channels):
    components = request.getfixturevalue(MODELS[unet_channels])
    result = Pipeline(components).inpaint("a cat", photo, square_mask, mask_blur=0, steps=STEPS, seed=1, n=2, progress=False)
    inside = np.asarray(square_mask) == 255
    for image in result.images:
        assert image.size == photo.size
        assert np.array_equal(pixels(image)[~inside], pixels(photo)[~inside])
        assert np.abs(pixels(image)[inside] - pixels(photo)[inside]).mean() > 5


def test_a_blurred_mask_feathers_the_blend_and_keeps_what_lies_beyond(tiny_components, photo):
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (12, 12, 20, 20))
    result = Pipeline(tiny_components).inpaint("a cat", photo, mask, mask_blur=1.5, steps=STEPS, seed=1, progress=False)
    changed = np.any(pixels(result.images[0]) != pixels(photo), axis=-1)
    y, x = np.nonzero(changed)
    assert changed[12:20, 12:20].mean() > 0.9
    # The feather reaches a few pixels beyond the mask, and no further.
    assert x.min() < 12 and x.max() >= 20 and 6 <= x.min() and x.max() < 26
    assert not changed[:4].any() and not changed[:, :4].any()


def test_an_all_black_mask_returns_the_input_unchanged(tiny_components, photo):
    black = Image.new("L", (32, 32), 0)
    result = Pipeline(tiny_components).inpaint("a cat", photo, black, steps=STEPS, seed=4, n=2, progress=False)
    assert all(np.array_equal(pixels(image), pixels(photo)) for image in result.images)
    assert result.seeds == [4, 5]
    assert any("all black" in note for note in result.notes)


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_an_all_white_mask_is_img2img(tiny_components, photo, strength):
    pipe = Pipeline(tiny_components)
    white = Image.new("1", (32, 32), 1)
    options = dict(steps=STEPS, seed=8, sampler="euler-a", progress=False)
    inpainted = pipe.inpaint("a cat", photo, white, strength, **options)
    assert any("all white" in note for note in inpainted.notes)
    expected = pipe.img2img("a cat", photo, strength, **options)
    assert np.array_equal(pixels(inpainted.images[0]), pixels(expected.images[0]))
    if strength == 1.0:
        assert np.array_equal(pixels(inpainted.images[0]), pixels(pipe.generate("a cat", **options).images[0]))


def test_an_inpainting_model_with_an_all_white_mask_repaints_everything(tiny_inpainting_components, photo):
    white = Image.new("L", (32, 32), 255)
    result = Pipeline(tiny_inpainting_components).inpaint("a cat", photo, white, steps=STEPS, seed=8, progress=False)
    assert np.any(pixels(result.images[0]) != pixels(photo), axis=-1).mean() > 0.9


def test_image_k_of_a_batch_equals_a_lone_run_with_its_seed(tiny_components, photo, square_mask):
    pipe = Pipeline(tiny_components)
    options = dict(steps=STEPS, cfg=1, sampler="euler-a", mask_blur=0, progress=False)
    batch = pipe.inpaint("a cat", photo, square_mask, 0.8, n=2, seed=30, **options)
    lone = pipe.inpaint("a cat", photo, square_mask, 0.8, n=1, seed=31, **options)
    assert np.abs(pixels(batch.images[1]) - pixels(lone.images[0])).max() <= 1


def test_crop_to_mask_inpaints_a_crop_at_model_size_and_keeps_the_rest(tiny_components):
    rng = np.random.default_rng(1)
    large = Image.fromarray(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8))  # 120 x 80
    mask = Image.new("L", large.size, 0)
    mask.paste(255, (70, 30, 80, 44))
    last = LastLatents()
    result = Pipeline(tiny_components).inpaint(
        "a cat", large, mask, mask_blur=0, crop_to_mask=6, steps=STEPS, seed=2, callback=last, progress=False
    )
    image = result.images[0]
    assert image.size == large.size
    assert last.latents.shape[-2:] == (16, 16)  # the crop ran at the model's 32 x 32
    inside = np.asarray(mask) == 255
    assert np.array_equal(pixels(image)[~inside], pixels(large)[~inside])
    assert np.abs(pixels(image)[inside] - pixels(large)[inside]).mean() > 5
    fields = parse_parameters(result.parameters[0].to_text())
    assert fields["Inpaint area"] == "Only masked" and fields["Masked area padding"] == "6"
    assert fields["Size"] == "120x80"


def test_crop_box_grows_to_the_work_aspect_ratio_within_the_image():
    mask = Image.new("L", (120, 80), 0)
    mask.paste(255, (70, 30, 80, 44))  # 10 x 14
    assert crop_box(mask, 6, 1.0) == (62, 24, 88, 50)  # (64, 24, 86, 50) padded, squared about its centre
    assert crop_box(mask, 6, 2.0) == (49, 24, 101, 50)  # 52 x 26
    mask = Image.new("L", (120, 80), 0)
    mask.paste(255, (0, 70, 4, 80))  # in a corner: shifted inside the image
    assert crop_box(mask, 0, 1.0) == (0, 70, 10, 80)
    mask = Image.new("L", (120, 80), 0)
    mask.paste(255, (116, 0, 120, 10))  # in the opposite corner
    assert crop_box(mask, 0, 1.0) == (110, 0, 120, 10)
    mask = Image.new("L", (120, 80), 255)
    assert crop_box(mask, 10, 1.0) == (0, 0, 120, 80)  # no room for a square: squeezed


def test_pad_outpaints_a_larger_canvas_and_keeps_the_picture(tiny_components, photo):
    result = Pipeline(tiny_components).inpaint("a cat", photo, pad=(8, 0, 16, 8), mask_blur=0, steps=STEPS, seed=3, progress=False)
    image = result.images[0]
    assert image.size == (32 + 8 + 16, 32 + 8)
    assert np.array_equal(pixels(image)[0:32, 8:40], pixels(photo))
    border = pixels(image)[:, 40:]
    edge_fill = np.repeat(pixels(photo)[:, -1:], 16, axis=1)  # what the border starts as
    assert np.abs(border[:32] - edge_fill).mean() > 5
    assert parse_parameters(result.parameters[0].to_text())["Outpaint padding"] == "8 0 16 8"


def test_pad_with_a_mask_repaints_both(tiny_components, photo, square_mask):
    result = Pipeline(tiny_components).inpaint(
        "a cat", photo, square_mask, pad=(0, 8, 0, 0), mask_blur=0, steps=STEPS, seed=3, progress=False
    )
    image = pixels(result.images[0])
    assert image.shape == (40, 32, 3)
    inside = np.asarray(square_mask) == 255
    assert np.array_equal(image[8:][~inside], pixels(photo)[~inside])
    assert np.abs(image[8:][inside] - pixels(photo)[inside]).mean() > 5


def test_a_mask_of_another_size_is_resized_and_said_so(tiny_components, photo, square_mask):
    small = square_mask.resize((16, 16), Image.NEAREST)
    result = Pipeline(tiny_components).inpaint("a cat", photo, small, mask_blur=0, steps=STEPS, seed=1, progress=False)
    assert "mask 16x16 resized to the image's 32x32" in result.notes
    inside = np.asarray(square_mask) == 255
    assert np.array_equal(pixels(result.images[0])[~inside], pixels(photo)[~inside])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"pad": (0, 0, -8, 0)}, "pad must not be negative"),
    ({"pad": (1, 2)}, "pad needs 4 values"),
    ({"mask_blur": -1}, "mask blur must be between 0 and 256 pixels, got -1"),
    ({"mask_blur": 1e12}, "mask blur must be between 0 and 256 pixels"),
    ({"mask_blur": float("nan")}, "mask blur must be between 0 and 256 pixels"),
    ({"pad": (100_000, 0, 0, 0)}, "outpainted canvas 100032x32 is 3.2 megapixels, over the limit"),
    ({"crop_to_mask": -4}, "crop-to-mask padding must not be negative"),
    ({"strength": 1.5}, "strength must be between 0 and 1"),
])  # fmt: skip
def test_bad_settings_are_refused(tiny_components, photo, square_mask, kwargs, message):
    with pytest.raises(GenerationError, match=message):
        Pipeline(tiny_components).inpaint("a cat", photo, square_mask, steps=2, progress=False, **kwargs)


def test_no_mask_and_no_pad_is_refused(tiny_components, photo):
    with pytest.raises(GenerationError, match="needs a mask"):
        Pipeline(tiny_components).inpaint("a cat", photo, steps=2, progress=False)


def test_parameters_record_the_inpainting_settings(tiny_components, photo, square_mask):
    result = Pipeline(tiny_components).inpaint("a cat", photo, square_mask, 0.9, mask_blur=2, steps=2, seed=6, progress=False)
    fields = parse_parameters(result.parameters[0].to_text())
    assert fields["Denoising strength"] == "0.9" and fields["Mask blur"] == "2" and fields["Seed"] == "6"
