"""SDXL's micro-conditioning given instead of A1111's defaults (original size = target size = the
drawn size, crop 0,0): ours against diffusers' original_size / crops_coords_top_left /
target_size, for the base and the refiner, on the tiny random folders; the command line, the
PNG parameters and the A1111 API carry them; a model without size ids refuses them."""

import pytest
from PIL import Image
from reference import LastLatents
from sdxl_folder import write_tiny_refiner_folder, write_tiny_sdxl_folder
from test_sdxl_refiner import diffusers_pipeline

from ldm.cli.generate import main
from ldm.pipeline import Pipeline, make_generators
from ldm.server.a1111 import Txt2ImgRequest, job_from_request
from ldm.settings import DEFAULT_LIMITS, GenerationError

STEPS = 4
OVERRIDES = dict(original_size=(96, 40), crop_top_left=(8, 16), target_size=(40, 24))
THEIRS = dict(original_size=(96, 40), crops_coords_top_left=(8, 16), target_size=(40, 24))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("micro")
    return write_tiny_sdxl_folder(root), write_tiny_refiner_folder(root)


def common() -> dict:
    return dict(prompt=["a lake"] * 2, negative_prompt=["dark"] * 2, num_inference_steps=STEPS, guidance_scale=5.0,
                generator=make_generators([7, 8]), output_type="latent")  # fmt: skip


def test_txt2img_overrides_match_diffusers(folders):
    from diffusers import StableDiffusionXLPipeline

    base = folders[0]
    pipe, last, plain = Pipeline.load(base), LastLatents(), LastLatents()
    options = dict(negative="dark", n=2, seed=7, steps=STEPS, cfg=5.0, sampler="euler", width=32, height=48, progress=False, prompt_syntax="plain")
    pipe.generate("a lake", callback=last, **options, **OVERRIDES)
    pipe.generate("a lake", callback=plain, **options)
    theirs = diffusers_pipeline(StableDiffusionXLPipeline, base, pipe, "euler")(width=32, height=48, **THEIRS, **common()).images
    assert (last.latents - theirs).abs().max().item() < 1e-4
    assert (plain.latents - theirs).abs().max().item() > 1e-3  # the overrides are read


def test_the_refiner_reads_the_original_size_and_crop(folders):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

    base, refiner = folders
    pipe, last = Pipeline.load(base), LastLatents()
    pipe.generate("a lake", negative="dark", n=2, seed=7, steps=STEPS, cfg=5.0, sampler="euler", width=32, height=32, callback=last,
                  progress=False, prompt_syntax="plain", refiner=str(refiner), refiner_switch=0.7, **OVERRIDES)  # fmt: skip
    given = common()
    handed = diffusers_pipeline(StableDiffusionXLPipeline, base, pipe, "euler")(width=32, height=32, denoising_end=0.7, **THEIRS, **given).images
    # The refiner reads the original size and crop (its time ids have no target size); the
    # unconditional pass shares them, as the base's does (diffusers' refiner needs telling).
    crop = THEIRS["crops_coords_top_left"]
    refined = diffusers_pipeline(StableDiffusionXLImg2ImgPipeline, refiner, pipe, "euler")(
        image=handed, denoising_start=0.7, original_size=THEIRS["original_size"], crops_coords_top_left=crop,
        negative_crops_coords_top_left=crop, **given,
    ).images  # fmt: skip
    assert (last.latents - refined).abs().max().item() < 1e-4


def test_the_command_line_and_png_carry_them(folders, tmp_path, capsys):
    base = folders[0]
    out = tmp_path / "lake.png"
    flags = ["--original-size", "96,40", "--crop-top-left", "8,16", "--target-size", "40,24"]
    assert main(["a lake", "--model", str(base), "--steps", "2", "--seed", "1", "--width", "32", "--height", "32", *flags, "--out", str(out), "--quiet"]) == 0
    assert "Original size: 96 40, Crop top left: 8 16, Target size: 40 24" in Image.open(out).text["parameters"]
    with pytest.raises(SystemExit) as stop:
        main(["a lake", "--model", str(base), "--original-size", "96", "--out", str(tmp_path / "x.png")])
    assert stop.value.code == 2
    assert "must be HEIGHT,WIDTH in pixels" in capsys.readouterr().err


def test_the_api_takes_diffusers_names():
    request = Txt2ImgRequest(prompt="a lake", original_size=[96, 40], crops_coords_top_left=[8, 16], target_size=[40, 24])
    settings = job_from_request(request, DEFAULT_LIMITS).settings
    assert (settings.original_size, settings.crop_top_left, settings.target_size) == ((96, 40), (8, 16), (40, 24))
    with pytest.raises(GenerationError, match="crop_top_left must be two whole numbers"):
        job_from_request(Txt2ImgRequest(prompt="a lake", crops_coords_top_left=[-1, 0]), DEFAULT_LIMITS)


def test_a_model_without_size_ids_refuses_them(tiny_components):
    with pytest.raises(GenerationError, match="original_size is SDXL's micro-conditioning"):
        Pipeline(tiny_components).generate("a lake", steps=1, original_size=(64, 64), progress=False)
