"""ControlNets on SDXL models: an SDXL ControlNet (diffusers' ControlNetModel with
addition_embed_type text_time, reading the pooled text and size ids) against diffusers'
StableDiffusionXLControlNetPipeline and its inpainting pipeline on the same tiny random parts;
an SD 1.x/2.x ControlNet on an SDXL model and the reverse are refused in one line."""

import pytest
from PIL import Image
from reference import LastLatents
from sdxl_folder import write_tiny_sdxl_folder
from tiny_controlnets import steering_controlnet

from ldm.control.library import ControlNets
from ldm.control.model import save_controlnet
from ldm.control.units import ControlUnit
from ldm.pipeline import Pipeline, make_generators
from test_sdxl_parity import reference

STEPS = 5
CFG = 5.0
SCALE, START, END = 0.7, 0.2, 0.8  # a weight other than 1 and a window that leaves out the first and last steps


@pytest.fixture(scope="module")
def sdxl_folder(tmp_path_factory):
    return write_tiny_sdxl_folder(tmp_path_factory.mktemp("sdxl"))


@pytest.fixture(scope="module")
def sdxl_controlnet(sdxl_folder):
    return steering_controlnet(Pipeline.load(sdxl_folder).components, 1)


def lines(width: int, height: int) -> Image.Image:
    from PIL import ImageDraw

    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    draw.line([(2, 4), (width - 3, height - 12)], fill="white", width=2)
    draw.rectangle([8, height - 14, 20, height - 4], outline="white")
    return image


@pytest.mark.parametrize(("sampler", "size", "negative"), [
    ("euler", (32, 32), ""),
    ("ddim", (48, 32), "blurry"),
    ("dpm++2m", (32, 48), ""),
])  # fmt: skip
def test_txt2img_matches_diffusers(sdxl_folder, sdxl_controlnet, sampler, size, negative):
    from diffusers import StableDiffusionXLControlNetPipeline

    assert sdxl_controlnet.config.addition_embed_type == "text_time"
    pipe = Pipeline(Pipeline.load(sdxl_folder).components, ControlNets.of(edges=("canny", sdxl_controlnet)))
    width, height = size
    control = lines(width, height)
    last = LastLatents()
    pipe.generate("a lake at dawn", negative=negative, controls=(ControlUnit(control, "raw", SCALE, START, END),), n=2, seed=7,
                  steps=STEPS, cfg=CFG, sampler=sampler, width=width, height=height, callback=last, progress=False,
                  prompt_syntax="plain")  # fmt: skip
    theirs = reference(sdxl_folder, StableDiffusionXLControlNetPipeline, pipe, sampler, controlnet=sdxl_controlnet)(
        prompt=["a lake at dawn"] * 2, negative_prompt=[negative] * 2 if negative else None, image=control,
        num_inference_steps=STEPS, guidance_scale=CFG, controlnet_conditioning_scale=SCALE, control_guidance_start=START,
        control_guidance_end=END, generator=make_generators([7, 8]), width=width, height=height, output_type="latent",
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, 4, height // 2, width // 2)
    assert (last.latents - theirs).abs().max().item() < 1e-4


def test_the_controlnet_reads_the_size_ids(sdxl_folder, sdxl_controlnet):
    """Guards the parity test: the control steers the result, and the ControlNet's own size ids matter."""
    pipe = Pipeline(Pipeline.load(sdxl_folder).components, ControlNets.of(edges=("canny", sdxl_controlnet)))
    seen = []
    hook = sdxl_controlnet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(tuple(kwargs["added_cond_kwargs"]["time_ids"][0].tolist())), with_kwargs=True
    )
    options = dict(steps=2, seed=1, cfg=1.0, width=48, height=32, progress=False)
    try:
        steered = pipe.generate("a boat", controls=(ControlUnit(lines(48, 32)),), **options)
    finally:
        hook.remove()
    assert set(seen) == {(32, 48, 0, 0, 32, 48)}
    assert steered.images[0].tobytes() != pipe.generate("a boat", **options).images[0].tobytes()


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_inpaint_matches_diffusers(sdxl_folder, sdxl_controlnet, strength):
    import numpy as np
    from diffusers import StableDiffusionXLControlNetInpaintPipeline

    pipe = Pipeline(Pipeline.load(sdxl_folder).components, ControlNets.of(edges=("canny", sdxl_controlnet)))
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8))
    mask = Image.new("L", (48, 32), 0)
    mask.paste(255, (5, 9, 39, 27))
    control = lines(48, 32)
    last = LastLatents()
    pipe.inpaint("a cat", photo, mask, strength, controls=(ControlUnit(control, "raw", SCALE, START, END),), mask_blur=0,
                 seed=3, steps=STEPS, cfg=CFG, sampler="ddim", callback=last, progress=False, prompt_syntax="plain")  # fmt: skip
    theirs = reference(sdxl_folder, StableDiffusionXLControlNetInpaintPipeline, pipe, "ddim", controlnet=sdxl_controlnet)(
        prompt="a cat", image=photo, mask_image=mask, control_image=control, width=48, height=32, strength=strength,
        num_inference_steps=STEPS, guidance_scale=CFG, controlnet_conditioning_scale=SCALE, control_guidance_start=START,
        control_guidance_end=END, generator=make_generators([3]), output_type="latent",
    ).images  # fmt: skip
    assert (last.latents - theirs).abs().max().item() < 1e-4


@pytest.mark.parametrize("direction", ["sd controlnet on sdxl", "sdxl controlnet on sd"])
def test_a_controlnet_of_the_other_family_is_one_line_and_exit_2(sdxl_folder, sdxl_controlnet, tiny_model_dir, tmp_path, capsys, direction):
    from ldm.cli.generate import main

    sd_controlnet = steering_controlnet(Pipeline.load(tiny_model_dir).components, 1)
    if direction == "sd controlnet on sdxl":
        model, net, message = sdxl_folder, sd_controlnet, "it is an SD 1.x/2.x ControlNet; this model is SDXL"
    else:
        model, net, message = tiny_model_dir, sdxl_controlnet, "it is an SDXL ControlNet; this model is SD 1.x/2.x"
    save_controlnet(net, "canny", tmp_path / "net")
    lines(32, 32).save(tmp_path / "edges.png")
    out = tmp_path / "out.png"
    with pytest.raises(SystemExit) as stop:
        main(["a lake", "--model", str(model), "--steps", "1", "--out", str(out), "--controlnet", str(tmp_path / "net"),
              "--control", str(tmp_path / "edges.png")])  # fmt: skip
    status, stderr = stop.value.code, capsys.readouterr().err
    # The error is the last line (transformers' own loading bars for the text encoders may come before it).
    assert (status, stderr.strip().splitlines()[-1]) == (2, f"ldm-generate: error: ControlNet net does not fit this model: {message}")
    assert not out.exists()
