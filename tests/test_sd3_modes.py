"""SD3 models drawing from pictures: img2img and inpainting against diffusers'
StableDiffusion3Img2ImgPipeline and StableDiffusion3InpaintPipeline on the tiny random SD3
folder (an MMDiT over 16 latent channels, the known region put back after every step), and the
hires fix composed of a txt2img pass and an img2img pass."""

import pytest
import torch
from reference import LastLatents
from sd3_folder import LATENT_CHANNELS, write_tiny_sd3_folder
from test_sdxl_inpaint import edge_mask, picture

from ldm.pipeline import Pipeline, make_generators

STEPS = 4


@pytest.fixture(scope="module")
def sd3_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd3-modes")
    return {"plain": write_tiny_sd3_folder(root, 3.0), "t5": write_tiny_sd3_folder(root, 1.0, t5=True)}


def reference(folder, pipeline_class):
    without_t5 = {} if (folder / "text_encoder_3").is_dir() else {"text_encoder_3": None, "tokenizer_3": None}
    ref = pipeline_class.from_pretrained(folder, **without_t5, local_files_only=True, use_safetensors=True)
    ref.set_progress_bar_config(disable=True)
    return ref


@pytest.mark.parametrize(("folder", "strength", "steps", "size"), [
    ("plain", 0.6, 4, (32, 32)),  # 2.4 steps: diffusers' flow pipelines run 3, not int(2.4)
    ("plain", 0.3, 7, (48, 32)),
    ("t5", 0.75, 4, (32, 48)),
    ("plain", 0.95, 5, (32, 32)),
])  # fmt: skip
def test_img2img_matches_diffusers(sd3_folders, folder, strength, steps, size):
    from diffusers import StableDiffusion3Img2ImgPipeline

    folder = sd3_folders[folder]
    width, height = size
    photo = picture(width, height)
    last = LastLatents()
    Pipeline.load(folder).img2img("a lake at dawn", photo, strength, negative="blurry", n=2, steps=steps, cfg=5.0, seed=3,
                                  callback=last, progress=False, prompt_syntax="plain")  # fmt: skip
    # One picture per image: with a list of generators diffusers encodes image k with generator k.
    theirs = reference(folder, StableDiffusion3Img2ImgPipeline)(
        prompt=["a lake at dawn"] * 2, negative_prompt=["blurry"] * 2, image=[photo] * 2, strength=strength,
        width=width, height=height, num_inference_steps=steps, guidance_scale=5.0, generator=make_generators([3, 4]), output_type="latent",
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, LATENT_CHANNELS, height // 2, width // 2)
    assert (last.latents - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize(("folder", "strength", "size"), [
    ("plain", 1.0, (32, 32)),
    ("plain", 0.6, (48, 32)),
    ("t5", 0.8, (32, 48)),
])  # fmt: skip
def test_inpaint_matches_diffusers(sd3_folders, folder, strength, size):
    from diffusers import StableDiffusion3InpaintPipeline

    folder = sd3_folders[folder]
    width, height = size
    photo, mask = picture(width, height), edge_mask(width, height)
    last = LastLatents()
    Pipeline.load(folder).inpaint("a cat", photo, mask, strength, negative="ugly", n=2, mask_blur=0, steps=STEPS, cfg=4.0,
                                  seed=5, callback=last, progress=False, prompt_syntax="plain")  # fmt: skip
    theirs = reference(folder, StableDiffusion3InpaintPipeline)(
        prompt=["a cat"] * 2, negative_prompt=["ugly"] * 2, image=[photo] * 2, mask_image=[mask] * 2, strength=strength,
        width=width, height=height, num_inference_steps=STEPS, guidance_scale=4.0, generator=make_generators([5, 6]),
        output_type="latent",
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, LATENT_CHANNELS, height // 2, width // 2)
    assert (last.latents - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize(("hires_steps", "hires_strength"), [(3, 0.5), (2, 0.7)])
def test_the_hires_fix_is_txt2img_then_img2img_of_the_upscaled_latents_as_diffusers_draws_them(sd3_folders, hires_steps, hires_strength):
    """The second pass is diffusers' img2img from the first pass's latents upscaled (given as
    latents, it encodes nothing), over a schedule that runs exactly the hires steps."""
    from diffusers import StableDiffusion3Img2ImgPipeline, StableDiffusion3Pipeline

    from ldm.hires import hires_schedule

    folder = sd3_folders["plain"]
    last = LastLatents()
    result = Pipeline.load(folder).generate(
        "a boat", n=2, steps=STEPS, cfg=3.0, seed=7, width=32, height=32, hires_scale=1.5, hires_upscaler="Latent",
        hires_steps=hires_steps, hires_strength=hires_strength, callback=last, progress=False, prompt_syntax="plain",
    )  # fmt: skip
    assert result.images[0].size == (48, 48)
    first = reference(folder, StableDiffusion3Pipeline)(prompt=["a boat"] * 2, num_inference_steps=STEPS, guidance_scale=3.0,
                      generator=make_generators([7, 8]), width=32, height=32, output_type="latent").images  # fmt: skip
    upscaled = torch.nn.functional.interpolate(first, size=(24, 24), mode="bilinear")
    schedule, _ = hires_schedule(hires_steps, hires_strength)
    img2img = reference(folder, StableDiffusion3Img2ImgPipeline)
    kept = []
    theirs = img2img(prompt=["a boat"] * 2, image=upscaled, strength=(hires_steps - 0.5) / schedule, num_inference_steps=schedule,
                     guidance_scale=3.0, generator=make_generators([7, 8]), output_type="latent",
                     callback_on_step_end=lambda p, i, t, kw: kept.append(t) or {}).images  # fmt: skip
    assert len(kept) == hires_steps
    assert (last.latents - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize(("sampler", "kept"), [("flow-euler", 3), ("flow-dpm++2m", 3), ("ddim", 2), ("euler", 2)])
def test_a_flow_sampler_cuts_a_schedule_as_diffusers_flow_pipelines(sampler, kept):
    """4 steps at strength 0.6: SD 1/2 and SDXL keep int(2.4) = 2, SD3's pipelines 4 - int(1.6) = 3."""
    from ldm.diffusion.samplers import make_sampler
    from ldm.diffusion.schedule import FLOW_PREDICTION

    config = {"shift": 3.0, "prediction_type": FLOW_PREDICTION} if sampler.startswith("flow") else {}
    chosen = make_sampler(sampler, config)
    assert len(chosen.set_timesteps(4, strength=0.6)) == kept
    for steps in range(2, 60):
        for run in range(1, steps):
            assert chosen.kept_steps(steps, chosen.strength_keeping(run, steps)) == run


def test_an_sd3_single_file_without_its_clips_is_refused_in_one_line(tmp_path):
    from safetensors.torch import save_file

    from ldm.models.weights import ModelError

    path = tmp_path / "sd3_medium.safetensors"
    save_file({"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": torch.zeros(6, 2),
               "first_stage_model.decoder.conv_in.weight": torch.zeros(1), "text_encoders.clip_l.x": torch.zeros(1)}, str(path))  # fmt: skip
    with pytest.raises(ModelError, match=r"holds no text_encoders\.clip_l\.transformer\.\* or text_encoders\.clip_g\.transformer\.\*: name a diffusers SD3 folder") as error:
        Pipeline.load(path)
    assert "\n" not in str(error.value)


def test_the_command_line_draws_an_sd3_folder_from_pictures(sd3_folders, tmp_path):
    """ldm-generate --init-image and --hires-scale (through pictures: the VAE's shift both ways),
    ldm-inpaint with an outpainting pad: each writes its picture."""
    from PIL import Image

    from ldm.cli.generate import main as generate_main
    from ldm.cli.inpaint import main as inpaint_main

    folder, photo, mask = str(sd3_folders["plain"]), tmp_path / "photo.png", tmp_path / "mask.png"
    picture(32, 32).save(photo)
    edge_mask(32, 32).save(mask)
    common = ["--model", folder, "--steps", "2", "--quiet"]
    assert generate_main(["a lake", "--init-image", str(photo), "--strength", "0.5", "--out", str(tmp_path / "a.png"), *common]) == 0
    assert generate_main(["a lake", "--width", "32", "--height", "32", "--hires-scale", "1.5", "--hires-upscaler", "Lanczos",
                          "--out", str(tmp_path / "b.png"), *common]) == 0  # fmt: skip
    assert inpaint_main(["a cat", "--image", str(photo), "--mask", str(mask), "--pad", "0,0,16,0", "--out", str(tmp_path / "c.png"), *common]) == 0
    assert [Image.open(tmp_path / name).size for name in ("a.png", "b.png", "c.png")] == [(32, 32), (48, 48), (48, 32)]


def test_an_sd3_model_a_single_file_would_misread_is_refused_in_one_line(sd3_folders, tmp_path, capsys):
    """The tiny folder's CLIP-L projects its pooled output (and its heads are 8 wide, not 64): no file is written."""
    from ldm.cli import convert

    target = tmp_path / "out.safetensors"
    with pytest.raises(SystemExit) as exit:
        convert.main([str(sd3_folders["plain"]), str(target)])
    assert exit.value.code == 2 and not target.exists()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ldm-convert")]
    assert len(lines) == 1 and lines[0].endswith("the original SD3 layout reads CLIP-L's pooled output unprojected; this model's text_encoder projects it")


def test_an_sd3_folder_converts_to_a_folder(sd3_folders, tmp_path):
    from ldm.cli import convert
    from ldm.formats.model_folder import load_model

    target = tmp_path / "copy"
    assert convert.main([str(sd3_folders["plain"]), str(target)]) == 0
    copy, source = load_model(target), load_model(sd3_folders["plain"])
    assert all(torch.equal(v, source.denoiser.state_dict()[k]) for k, v in copy.denoiser.state_dict().items())
