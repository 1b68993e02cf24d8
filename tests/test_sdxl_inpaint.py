"""Inpainting with SDXL models against diffusers' StableDiffusionXLInpaintPipeline on the same
tiny random folders: an ordinary SDXL model (4-channel U-Net, the known region put back after
every step) and an SDXL inpainting model (9-channel U-Net: latents + mask + masked input)."""

import numpy as np
import pytest
import torch
from PIL import Image
from reference import LastLatents
from sdxl_folder import tiny_sdxl_parts, write_tiny_sdxl_folder

from ldm.pipeline import Pipeline, make_generators
from test_sdxl_parity import reference

STEPS = 4


def write_tiny_sdxl_inpainting_folder(path):
    """The tiny SDXL folder with a 9-channel U-Net of its own random weights (as SDXL inpainting models are)."""
    from diffusers import StableDiffusionXLInpaintPipeline, UNet2DConditionModel

    parts = tiny_sdxl_parts(path)
    torch.manual_seed(1)
    parts["unet"] = UNet2DConditionModel.from_config({**parts["unet"].config, "in_channels": 9}).eval()
    folder = path / "sdxl-inpainting-tiny"
    StableDiffusionXLInpaintPipeline(**parts).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def sdxl_folders(tmp_path_factory):
    return {
        4: write_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl")),
        9: write_tiny_sdxl_inpainting_folder(tmp_path_factory.mktemp("sdxl-inpainting")),
    }


def picture(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(0).integers(0, 24, (height, width, 3))
    return Image.fromarray((np.stack([x * 5, y * 5, (x + y) * 3], axis=-1) + noise).clip(0, 255).astype(np.uint8))


def edge_mask(width: int, height: int) -> Image.Image:
    """A mask whose edges are not on latent cells: the downsampling must match too."""
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (5, 9, width - 9, height - 5))
    return mask


@pytest.mark.parametrize(("channels", "sampler", "strength", "size"), [
    (4, "euler", 1.0, (32, 32)),
    (4, "ddim", 0.6, (48, 32)),
    (4, "dpm++2m", 1.0, (32, 48)),
    (9, "euler", 1.0, (32, 32)),
    (9, "ddim", 0.6, (32, 48)),
    (9, "euler-a", 1.0, (48, 32)),
])  # fmt: skip
def test_inpaint_matches_diffusers(sdxl_folders, channels, sampler, strength, size):
    from diffusers import StableDiffusionXLInpaintPipeline

    folder = sdxl_folders[channels]
    pipe = Pipeline.load(folder)
    assert pipe.is_inpainting_model == (channels == 9)
    width, height = size
    photo, mask = picture(width, height), edge_mask(width, height)
    last = LastLatents()
    pipe.inpaint("a cat on a sofa", photo, mask, strength, negative="blurry", n=2, mask_blur=0, steps=STEPS, cfg=5.0,
                 sampler=sampler, seed=3, callback=last, progress=False, prompt_syntax="plain")  # fmt: skip
    # The picture and mask once per image: diffusers' SDXL inpainting encodes a single picture
    # with the first generator only and repeats it; ours draws each image's posterior from its own seed.
    theirs = reference(folder, StableDiffusionXLInpaintPipeline, pipe, sampler)(
        prompt=["a cat on a sofa"] * 2, negative_prompt=["blurry"] * 2, image=[photo] * 2, mask_image=[mask] * 2, strength=strength,
        width=width, height=height, num_inference_steps=STEPS, guidance_scale=5.0, generator=make_generators([3, 4]),
        output_type="latent",
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, 4, height // 2, width // 2)
    assert (last.latents - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize("channels", [4, 9])
def test_inpainting_keeps_the_unmasked_pixels_and_gives_the_drawn_size_ids(sdxl_folders, channels):
    pipe = Pipeline.load(sdxl_folders[channels])
    photo, mask = picture(48, 32), edge_mask(48, 32)
    seen = []
    hook = pipe.components.denoiser.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["added_cond_kwargs"]["time_ids"][0].tolist())), with_kwargs=True
    )
    try:
        result = pipe.inpaint("a cat", photo, mask, mask_blur=0, steps=2, seed=1, progress=False)
    finally:
        hook.remove()
    assert set(seen) == {(32, 48, 0, 0, 32, 48)}
    inside = np.asarray(mask) == 255
    image = np.asarray(result.images[0])
    assert np.array_equal(image[~inside], np.asarray(photo)[~inside])
    assert not np.array_equal(image[inside], np.asarray(photo)[inside])


def test_an_sdxl_inpainting_model_refuses_txt2img_in_one_line(sdxl_folders):
    from ldm.settings import GenerationError

    with pytest.raises(GenerationError, match="^this model is an inpainting model .*: use inpaint$"):
        Pipeline.load(sdxl_folders[9]).generate("a cat", steps=1, progress=False)
