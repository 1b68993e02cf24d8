"""An SDXL refiner after img2img, inpainting and the hires fix: ours against diffusers' SDXL
img2img and inpaint pipelines, the base's with denoising_end, then the refiner's with
denoising_start on those latents, on the tiny random folders of test_sdxl_refiner."""

import pytest
from reference import LastLatents
from test_sdxl_inpaint import edge_mask, picture, write_tiny_sdxl_inpainting_folder
from sdxl_folder import write_tiny_refiner_folder, write_tiny_sdxl_folder
from test_sdxl_refiner import STEPS, diffusers_pipeline

from ldm.pipeline import Pipeline, make_generators
from ldm.settings import GenerationError

PROMPT = "a lake at dawn"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("refiner-edit")
    return write_tiny_sdxl_folder(root), write_tiny_refiner_folder(root)


def common(negative: str, cfg: float, seed: int = 10) -> dict:
    return dict(
        prompt=[PROMPT] * 2, negative_prompt=[negative] * 2 if negative else None, num_inference_steps=STEPS,
        guidance_scale=cfg, generator=make_generators([seed, seed + 1]),
    )  # fmt: skip


@pytest.mark.parametrize(("sampler", "strength", "switch", "negative"), [
    ("euler", 0.7, 0.8, "blurry"),
    ("dpm++2m", 0.9, 0.6, ""),
    ("euler-a", 0.75, 0.7, ""),
])  # fmt: skip
def test_img2img_hand_off_matches_diffusers(folders, sampler, strength, switch, negative):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    base, refiner = folders
    pipe, last, photo = Pipeline.load(base), LastLatents(), picture(32, 48)
    pipe.img2img(PROMPT, photo, strength, n=2, seed=10, steps=STEPS, cfg=5.0, sampler=sampler, negative=negative, callback=last,
                 progress=False, prompt_syntax="plain", refiner=str(refiner), refiner_switch=switch)  # fmt: skip
    given = common(negative, 5.0)
    handed = diffusers_pipeline(StableDiffusionXLImg2ImgPipeline, base, pipe, sampler)(
        image=[photo] * 2, strength=strength, denoising_end=switch, output_type="latent", **given
    ).images  # fmt: skip
    theirs = diffusers_pipeline(StableDiffusionXLImg2ImgPipeline, refiner, pipe, sampler)(
        image=handed, denoising_start=switch, output_type="latent", **given
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, 4, 24, 16)
    assert (last.latents - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize(("channels", "sampler", "strength", "switch"), [(4, "ddim", 0.8, 0.6), (4, "euler-a", 1.0, 0.7), (9, "euler", 1.0, 0.8)])
def test_inpaint_hand_off_matches_diffusers(folders, tmp_path, channels, sampler, strength, switch):
    """A 4-channel base keeps the known region itself; a 9-channel inpainting base reads the
    mask, and the (4-channel) refiner keeps the region outside it either way."""
    from diffusers import StableDiffusionXLInpaintPipeline

    base, refiner = folders
    if channels == 9:
        base = write_tiny_sdxl_inpainting_folder(tmp_path)
    pipe, last = Pipeline.load(base), LastLatents()
    photo, mask = picture(48, 32), edge_mask(48, 32)
    pipe.inpaint(PROMPT, photo, mask, strength, negative="dark", n=2, mask_blur=0, steps=STEPS, cfg=4.0, sampler=sampler, seed=3,
                 callback=last, progress=False, prompt_syntax="plain", refiner=str(refiner), refiner_switch=switch)  # fmt: skip
    given = {**common("dark", 4.0, seed=3), "mask_image": [mask] * 2, "width": 48, "height": 32}
    handed = diffusers_pipeline(StableDiffusionXLInpaintPipeline, base, pipe, sampler)(
        image=[photo] * 2, strength=strength, denoising_end=switch, output_type="latent", **given
    ).images  # fmt: skip
    theirs = diffusers_pipeline(StableDiffusionXLInpaintPipeline, refiner, pipe, sampler)(
        image=handed, denoising_start=switch, output_type="latent", **given
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, 4, 16, 24)
    assert (last.latents - theirs).abs().max().item() < 1e-4


def test_hires_fix_second_pass_is_refined(folders):
    """The hires fix's second pass is img2img of the upscaled first picture: the refiner takes
    the last part of it, so the result differs from the base's alone but keeps its size."""
    base, refiner = folders
    pipe = Pipeline.load(base)
    options = dict(seed=5, steps=STEPS, width=32, height=32, hires_scale=1.5, hires_strength=0.7, progress=False)
    alone = pipe.generate(PROMPT, **options).images[0]
    seen = []
    refined = pipe.generate(PROMPT, refiner=str(refiner), callback=seen.append, **options)
    assert refined.images[0].size == alone.size == (48, 48)
    # One count over both passes and both models: every step once, the last one the total.
    assert [info.step for info in seen] == list(range(len(seen))) and seen[-1].total == len(seen)
    assert refined.images[0].tobytes() != alone.tobytes()
    assert "Refiner switch at: 0.8" in refined.parameters[0].to_text()


def test_a_run_that_starts_after_the_switch_is_refused(folders):
    base, refiner = folders
    pipe = Pipeline.load(base)
    with pytest.raises(GenerationError, match="starts after the refiner switch at 0.8"):
        pipe.img2img(PROMPT, picture(32, 32), 0.2, steps=STEPS, seed=1, progress=False, refiner=str(refiner))


def test_ldm_inpaint_takes_a_refiner(folders, tmp_path):
    from ldm.cli.inpaint import main as inpaint_main

    base, refiner = folders
    picture(32, 32).save(tmp_path / "in.png")
    edge_mask(32, 32).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    args = [PROMPT, "--model", str(base), "--image", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"),
            "--steps", "3", "--seed", "1", "--refiner", str(refiner), "--refiner-switch", "0.7", "--out", str(out), "--quiet"]  # fmt: skip
    assert inpaint_main(args) == 0
    assert out.exists()
