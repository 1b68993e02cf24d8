"""Sampling with ControlNets against diffusers' ControlNet pipelines on the same tiny parts:
txt2img, img2img and inpainting, one ControlNet and two (MultiControlNetModel)."""

import pytest
import torch
from PIL import Image
from reference import LastLatents, diffusers_pipeline
from tiny_controlnets import steering_controlnet

from ldm.control.denoiser import ActiveControl, control_tensor
from ldm.control.library import ControlNets
from ldm.control.units import ControlUnit
from ldm.pipeline import Pipeline, SampleRequest, make_generators

STEPS = 6
CFG = 5.0
SAMPLERS = ["ddim", "euler-a", "dpm++2m"]
# A weight other than 1 and a window that leaves out the first and last steps.
SCALE, START, END = 0.7, 0.2, 0.8


def close(ours, theirs):
    assert ours.shape == theirs.shape
    difference = (ours - theirs).abs().max().item()
    assert difference < 1e-4, difference


def embeddings(pipe, n=1):
    return pipe.encode_text(["a lake at dawn"] * n), pipe.encode_text([""] * n)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_txt2img_matches_diffusers(tiny_components, controlnet, edges, sampler):
    from diffusers import StableDiffusionControlNetPipeline

    pipe = Pipeline(tiny_components, ControlNets.of(edges=("canny", controlnet)))
    context, uncond = embeddings(pipe, 2)
    reference = diffusers_pipeline(StableDiffusionControlNetPipeline, tiny_components, sampler, controlnet=controlnet)
    expected = reference(
        prompt_embeds=context.tokens, negative_prompt_embeds=uncond.tokens, image=edges, num_inference_steps=STEPS,
        guidance_scale=CFG, controlnet_conditioning_scale=SCALE, control_guidance_start=START,
        control_guidance_end=END, generator=make_generators([7, 8]), height=32, width=32, output_type="latent",
    ).images  # fmt: skip
    last = LastLatents()
    unit = ControlUnit(edges, "raw", SCALE, START, END)
    pipe.generate("a lake at dawn", controls=(unit,), n=2, seed=7, steps=STEPS, cfg=CFG, sampler=sampler,
                  callback=last, progress=False)  # fmt: skip
    close(last.latents, expected)


def test_the_window_and_scale_matter(tiny_components, controlnet, edges):
    """Guards the parity test: the control, its weight and its window each change the result."""
    pipe = Pipeline(tiny_components)
    context, uncond = embeddings(pipe)
    noise = torch.randn(pipe.latent_shape(1, 32, 32), generator=torch.Generator().manual_seed(1))
    image = control_tensor(edges, (32, 32))

    def run(*controls):
        return pipe.sample(SampleRequest(context, uncond, noise, STEPS, CFG, "ddim", progress=False, controls=controls))

    plain = run()
    full = run(ActiveControl(controlnet, image))
    assert (full - plain).abs().max() > 1e-3
    assert (run(ActiveControl(controlnet, image, SCALE)) - full).abs().max() > 1e-4
    assert (run(ActiveControl(controlnet, image, 1.0, START, END)) - full).abs().max() > 1e-4
    assert torch.equal(run(ActiveControl(controlnet, image, 0.0)), plain)  # weight 0: no control


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_two_controlnets_match_multicontrolnet(tiny_components, controlnet, second_controlnet, edges, photo, sampler):
    from diffusers import StableDiffusionControlNetPipeline
    from diffusers.models import MultiControlNetModel

    pipe = Pipeline(tiny_components, ControlNets.of(edges=("canny", controlnet), scene=("layout", second_controlnet)))
    context, uncond = embeddings(pipe)
    both = MultiControlNetModel([controlnet, second_controlnet])
    reference = diffusers_pipeline(StableDiffusionControlNetPipeline, tiny_components, sampler, controlnet=both)
    expected = reference(
        prompt_embeds=context.tokens, negative_prompt_embeds=uncond.tokens, image=[edges, photo], num_inference_steps=STEPS,
        guidance_scale=CFG, controlnet_conditioning_scale=[SCALE, 1.3], control_guidance_start=[START, 0.0],
        control_guidance_end=[END, 0.5], generator=make_generators([3]), height=32, width=32, output_type="latent",
    ).images  # fmt: skip
    last = LastLatents()
    units = (ControlUnit(edges, "raw", SCALE, START, END, model="edges"), ControlUnit(photo, "raw", 1.3, 0.0, 0.5, model="scene"))
    pipe.generate("a lake at dawn", controls=units, seed=3, steps=STEPS, cfg=CFG, sampler=sampler, callback=last, progress=False)
    close(last.latents, expected)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_img2img_matches_diffusers(tiny_components, controlnet, edges, photo, sampler):
    from diffusers import StableDiffusionControlNetImg2ImgPipeline

    pipe = Pipeline(tiny_components, ControlNets.of(edges=("canny", controlnet)))
    context, uncond = embeddings(pipe)
    reference = diffusers_pipeline(StableDiffusionControlNetImg2ImgPipeline, tiny_components, sampler, controlnet=controlnet)
    expected = reference(
        prompt_embeds=context.tokens, negative_prompt_embeds=uncond.tokens, image=photo, control_image=edges, strength=0.7,
        num_inference_steps=STEPS, guidance_scale=CFG, controlnet_conditioning_scale=SCALE,
        control_guidance_start=START, control_guidance_end=END, generator=make_generators([5]), output_type="latent",
    ).images  # fmt: skip
    last = LastLatents()
    unit = ControlUnit(edges, "raw", SCALE, START, END)
    pipe.img2img("a lake at dawn", photo, 0.7, controls=(unit,), seed=5, steps=STEPS, cfg=CFG, sampler=sampler,
                 callback=last, progress=False)  # fmt: skip
    close(last.latents, expected)


@pytest.mark.parametrize("strength", [1.0, 0.6])
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("fixture", ["tiny_components", "tiny_inpainting_components"])
def test_inpaint_matches_diffusers(request, fixture, edges, photo, sampler, strength):
    from diffusers import StableDiffusionControlNetInpaintPipeline

    components = request.getfixturevalue(fixture)
    controlnet = steering_controlnet(components, 1)
    pipe = Pipeline(components, ControlNets.of(edges=("canny", controlnet)))
    context, uncond = embeddings(pipe)
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (5, 9, 22, 27))
    reference = diffusers_pipeline(StableDiffusionControlNetInpaintPipeline, components, sampler, controlnet=controlnet)
    expected = reference(
        prompt_embeds=context.tokens, negative_prompt_embeds=uncond.tokens, image=photo, mask_image=mask, control_image=edges,
        height=32, width=32, strength=strength, num_inference_steps=STEPS, guidance_scale=CFG,
        controlnet_conditioning_scale=SCALE, control_guidance_start=START, control_guidance_end=END,
        generator=make_generators([3]), output_type="latent",
    ).images  # fmt: skip
    last = LastLatents()
    unit = ControlUnit(edges, "raw", SCALE, START, END)
    pipe.inpaint("a lake at dawn", photo, mask, strength, controls=(unit,), mask_blur=0, seed=3, steps=STEPS, cfg=CFG,
                 sampler=sampler, callback=last, progress=False)  # fmt: skip
    close(last.latents, expected)


def test_a_control_image_of_another_size_is_resized_and_said(tiny_components, controlnet, photo):
    pipe = Pipeline(tiny_components, ControlNets.of(edges=("canny", controlnet)))
    big = photo.resize((64, 48))
    options = dict(steps=2, seed=4, sampler="ddim", progress=False)
    result = pipe.generate("a lake", controls=(ControlUnit(big),), **options)
    assert result.notes == ["control image 0 64x48 resized to 32x32"]
    same = pipe.generate("a lake", controls=(ControlUnit(big.resize((32, 32), Image.Resampling.LANCZOS)),), **options)
    assert result.images[0].tobytes() == same.images[0].tobytes()
    assert pipe.generate("a lake", **options).images[0].tobytes() != same.images[0].tobytes()


def test_inpainting_a_crop_cuts_the_control_image_to_it(tiny_components, controlnet, photo, square_mask):
    """With --crop-to-mask the control image (covering the whole picture) is cut to the crop."""
    import numpy as np

    from ldm.control.prepare import crop_controls

    control = Image.fromarray(255 - np.asarray(photo)).resize((64, 64))
    (unit,) = crop_controls((ControlUnit(control),), (32, 32), (4, 4, 28, 28))
    assert unit.image.tobytes() == control.resize((32, 32), Image.Resampling.LANCZOS).crop((4, 4, 28, 28)).tobytes()

    pipe = Pipeline(tiny_components, ControlNets.of(edges=("canny", controlnet)))
    options = dict(crop_to_mask=4, width=32, height=32, mask_blur=0, steps=2, seed=4, sampler="ddim", progress=False)
    steered = pipe.inpaint("a boat", photo, square_mask, controls=(ControlUnit(control),), **options)
    plain = pipe.inpaint("a boat", photo, square_mask, **options)
    assert steered.images[0].size == photo.size
    assert steered.images[0].tobytes() != plain.images[0].tobytes()
    assert any(note.startswith("control image 0 ") for note in steered.notes)
