"""ControlNets on SD3 models: an SD3 ControlNet (diffusers' SD3ControlNetModel, whose block
samples the MMDiT adds to its joint blocks) against diffusers' StableDiffusion3ControlNetPipeline
on the same tiny random folder, with guidance on and off, a weight other than 1 and a window;
the InstantX kind (zeros for the pooled text, unshifted control latents) and the SD 3.5 kind
(no text attention) too. A U-Net ControlNet on an SD3 model and the reverse are refused in one line."""

import pytest
import torch
from PIL import Image
from reference import LastLatents
from sd3_folder import LATENT_CHANNELS, write_tiny_sd3_folder
from test_sd3_parity import reference
from test_sdxl_control import lines
from tiny_controlnets import sd3_controlnet, steering_controlnet

from ldm.control.library import ControlNets
from ldm.control.model import load_controlnet, save_controlnet
from ldm.control.units import ControlUnit
from ldm.pipeline import Pipeline, make_generators

STEPS = 5
SCALE, START, END = 0.7, 0.2, 0.8  # a weight other than 1 and a window that leaves out the first and last steps


@pytest.fixture(scope="module")
def sd3_folder(tmp_path_factory):
    return write_tiny_sd3_folder(tmp_path_factory.mktemp("sd3"))


@pytest.fixture
def posterior_mean(monkeypatch):
    """diffusers' pipeline encodes the control image with a draw from the global generator;
    ours takes the posterior's mean (a seed draws the same picture): the reference does too."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())


@pytest.mark.parametrize(("cfg", "size", "negative", "kind"), [
    (5.0, (32, 32), "", "plain"),
    (1.0, (48, 32), "", "plain"),  # no guidance: one pass
    (4.0, (32, 48), "blurry", "instantx"),  # zeros for the pooled text, control latents unshifted
    (5.0, (32, 32), "", "no text"),  # SD 3.5's: no text attention in the ControlNet
])  # fmt: skip
def test_txt2img_matches_diffusers(sd3_folder, posterior_mean, cfg, size, negative, kind):
    from diffusers import StableDiffusion3ControlNetPipeline

    net = sd3_controlnet(force_zeros=kind == "instantx", text=kind != "no text")
    pipe = Pipeline(Pipeline.load(sd3_folder).components, ControlNets.of(edges=("canny", net)))
    width, height = size
    control = lines(width, height)
    last = LastLatents()
    pipe.generate("a lake at dawn", negative=negative, controls=(ControlUnit(control, "raw", SCALE, START, END),), n=2, seed=7,
                  steps=STEPS, cfg=cfg, width=width, height=height, callback=last, progress=False, prompt_syntax="plain")  # fmt: skip
    plain = reference(sd3_folder)
    theirs = StableDiffusion3ControlNetPipeline(**plain.components, controlnet=net)(
        prompt=["a lake at dawn"] * 2, negative_prompt=[negative] * 2 if negative else None, control_image=control,
        num_inference_steps=STEPS, guidance_scale=cfg, controlnet_conditioning_scale=SCALE, control_guidance_start=START,
        control_guidance_end=END, generator=make_generators([7, 8]), width=width, height=height, output_type="latent",
    ).images  # fmt: skip
    assert last.latents.shape == theirs.shape == (2, LATENT_CHANNELS, height // 2, width // 2)
    assert (last.latents - theirs).abs().max().item() < 1e-4


def test_the_control_steers_and_only_inside_its_window(sd3_folder):
    """Guards the parity test: the ControlNet changes the picture, and a window that holds no
    step (start = end = 0.5 of 1 step) or a weight of 0 leaves it as drawn without."""
    pipe = Pipeline(Pipeline.load(sd3_folder).components, ControlNets.of(edges=("canny", sd3_controlnet())))
    options = dict(steps=1, seed=1, cfg=3.0, width=32, height=32, progress=False)
    plain = pipe.generate("a boat", **options).images[0].tobytes()
    steered = pipe.generate("a boat", controls=(ControlUnit(lines(32, 32)),), **options).images[0].tobytes()
    idle = pipe.generate("a boat", controls=(ControlUnit(lines(32, 32), start=0.5, end=0.5),), **options).images[0].tobytes()
    weightless = pipe.generate("a boat", controls=(ControlUnit(lines(32, 32), scale=0.0),), **options).images[0].tobytes()
    assert steered != plain and idle == plain and weightless == plain


def test_two_controlnets_add_their_block_samples(sd3_folder, posterior_mean):
    from diffusers import SD3MultiControlNetModel, StableDiffusion3ControlNetPipeline

    first, second = sd3_controlnet(1), sd3_controlnet(2)
    pipe = Pipeline(Pipeline.load(sd3_folder).components, ControlNets.of(a=("canny", first), b=("layout", second)))
    control, other = lines(32, 32), lines(32, 32).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    last = LastLatents()
    units = (ControlUnit(control, "raw", 0.6, 0.0, 1.0, "a"), ControlUnit(other, "raw", 1.2, 0.0, 0.6, "b"))
    pipe.generate("a cat", controls=units, seed=4, steps=STEPS, cfg=4.0, width=32, height=32, callback=last, progress=False)
    theirs = StableDiffusion3ControlNetPipeline(**reference(sd3_folder).components, controlnet=SD3MultiControlNetModel([first, second]))(
        prompt="a cat", control_image=[control, other], num_inference_steps=STEPS, guidance_scale=4.0,
        controlnet_conditioning_scale=[0.6, 1.2], control_guidance_start=[0.0, 0.0], control_guidance_end=[1.0, 0.6],
        generator=make_generators([4]), width=32, height=32, output_type="latent",
    ).images  # fmt: skip
    assert (last.latents - theirs).abs().max().item() < 1e-4


def test_an_sd3_controlnet_folder_loads_as_one(tmp_path):
    net = sd3_controlnet()
    again = load_controlnet(save_controlnet(net, None, tmp_path / "net"))
    assert type(again).__name__ == "SD3ControlNetModel"
    assert all(a.equal(b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_a_controlnet_folder_of_another_class_is_one_line(tmp_path):
    import json

    from safetensors.torch import save_file

    from ldm.formats.model_folder import ModelError

    (tmp_path / "flux").mkdir()
    (tmp_path / "flux" / "config.json").write_text(json.dumps({"_class_name": "FluxControlNetModel"}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "flux" / "diffusion_pytorch_model.safetensors"))
    with pytest.raises(ModelError, match="holds a FluxControlNetModel; ControlNets here are ControlNetModel or SD3ControlNetModel$"):
        load_controlnet(tmp_path / "flux")


@pytest.mark.parametrize(("direction", "message"), [
    ("sd controlnet on sd3", "it is an SD 1.x/2.x ControlNet; this model is SD3"),
    ("sd3 controlnet on sd", "it is an SD3 ControlNet; this model is SD 1.x/2.x"),
    ("too wide", "its blocks are 64 wide; this model's MMDiT blocks are 32 wide"),
    ("inpainting", "it is an SD3 inpainting ControlNet"),
])  # fmt: skip
def test_a_controlnet_that_does_not_fit_is_one_line_and_exit_2(sd3_folder, tiny_model_dir, tmp_path, capsys, direction, message):
    from ldm.cli.generate import main

    model, net = sd3_folder, sd3_controlnet()
    if direction == "sd controlnet on sd3":
        net = steering_controlnet(Pipeline.load(tiny_model_dir).components, 1)
    elif direction == "sd3 controlnet on sd":
        model = tiny_model_dir
    elif direction == "too wide":
        net = sd3_controlnet(num_attention_heads=8)
    else:
        net = sd3_controlnet(extra_conditioning_channels=1)
    save_controlnet(net, None, tmp_path / "net")
    lines(32, 32).save(tmp_path / "edges.png")
    out = tmp_path / "out.png"
    with pytest.raises(SystemExit) as stop:
        main(["a lake", "--model", str(model), "--steps", "1", "--out", str(out), "--controlnet", str(tmp_path / "net"),
              "--control", str(tmp_path / "edges.png")])  # fmt: skip
    status, last_line = stop.value.code, capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 2 and last_line.startswith("ldm-generate: error: ControlNet net does not fit this model: " + message)
    assert not out.exists()


def test_ldm_generate_draws_with_an_sd3_controlnet_folder(sd3_folder, tmp_path):
    from ldm.cli.generate import main
    from ldm.png_info import parse_parameters

    save_controlnet(sd3_controlnet(), None, tmp_path / "edges")
    lines(32, 32).save(tmp_path / "edges.png")
    out = tmp_path / "out.png"
    assert main(["a lake", "--model", str(sd3_folder), "--steps", "2", "--width", "32", "--height", "32", "--out", str(out),
                 "--controlnet", str(tmp_path / "edges"), "--control", str(tmp_path / "edges.png"), "--control-scale", "0.5",
                 "--control-start", "0.1", "--control-end", "0.9", "--quiet"]) == 0  # fmt: skip
    fields = parse_parameters(Image.open(out).info["parameters"])
    assert fields["ControlNet 0"] == "Module: none, Model: edges, Weight: 0.5, Guidance Start: 0.1, Guidance End: 0.9"
